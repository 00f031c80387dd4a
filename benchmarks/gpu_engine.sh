#!/usr/bin/env bash
# One GPU call for issue 15 (see benchmarks/engine_gpu.py): run from the root that holds .whl, .oracle and
# .gpu-shared, with this tree at $TREE; results in $OUT. SIZE=tiny DEVICE=cpu runs the same steps on a CPU.
# Order: upstream's speed on a quiet machine; then the AOTInductor build in the background (CPU-bound: code
# generation and C++ compilation) while the compile stage runs; then the AOTInductor load/verify/timing and the
# warm start of the compile backend, each in a fresh process.
set -u
TREE=${TREE:?}; OUT=${OUT:?}; SIZE=${SIZE:-full}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
W=${WEIGHTS:-/tmp/pw-$SIZE}; ROOT=$PWD
log() { echo "[$(date -u +%T)] $*"; }
if [ -d .whl ] && [ "${SKIP_WHEELS:-0}" = 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-up .oracle/wheels/*.whl
fi
export PYTHONPATH=/tmp/site:$TREE PYTHONUNBUFFERED=1
E="$PY -m benchmarks.engine_gpu --weights $W --out $OUT --size $SIZE --device $DEVICE --dtype ${DTYPE:-fp16}"
cd "$TREE" || exit 1
log init; $E init 2>&1 | tail -n 3
if [ "${SKIP_UPSTREAM:-0}" = 0 ]; then
  log upstream
  ORACLE_HOME=$ROOT/.oracle PYTHONPATH=/tmp/site-up $PY $ROOT/.gpu-shared/oracle/bench_gpu.py \
    --frames 48 --runs upstream,no_hkf --skip-micro --out "$OUT/upstream" \
    $( [ "$SIZE" = tiny ] && echo --size tiny --dtype fp32 ) > "$OUT/upstream.log" 2>&1; echo "upstream rc=$?"
  rm -f "$OUT/upstream/windows.csv"  # at most 8 files come back
  tail -n 15 "$OUT/upstream.log"
fi
if [ "${SKIP_AOTI:-0}" = 0 ]; then
  log aoti-build background
  ($E aoti-build > "$OUT/aoti-build.log" 2>&1; echo "aoti-build rc=$?" >> "$OUT/aoti-build.log") &
  BUILD=$!
fi
log compile; $E compile 2>&1 | grep -v Warning | tail -n 25
if [ "${SKIP_AOTI:-0}" = 0 ]; then
  log waiting for aoti-build; wait $BUILD; tail -n 6 "$OUT/aoti-build.log"
  log aoti-run; $E aoti-run 2>&1 | grep -v Warning | tail -n 25
fi
log compile-warm; $E compile-warm 2>&1 | tail -n 4
log done
