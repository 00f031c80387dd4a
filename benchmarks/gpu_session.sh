#!/usr/bin/env bash
# The one GPU call of a speed session (see /work/coord/gpu.md): run from the /work/main root on the device machine,
#   bash .gpu-speed/tree/benchmarks/gpu_session.sh
# with this tree copied to .gpu-speed/tree and carried, plus .whl, .oracle/upstream, .oracle/wheels, .gpu-shared.
# Upstream's bench_gpu.py runs first in its own environment; then benchmarks/gpu_session.py (ours, every variant,
# the weights written to /tmp and the whole `personalive animate` command with this tree and with main's).
set -u
ROOT=$PWD
TREE=$ROOT/.gpu-speed/tree
OUT=${OUT:?set by the device machine}
pip() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$@"; }
pip --upgrade --target /tmp/site .whl/*.whl || exit 1
pip --target /tmp/site-up .oracle/wheels/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" 2>&1
UPSTREAM="ORACLE_HOME=$ROOT/.oracle PYTHONPATH=/tmp/site-up python3 $ROOT/.gpu-shared/oracle/bench_gpu.py \
--frames 96 --runs upstream,no_hkf --skip-micro --out $OUT/upstream"
cd "$TREE" || exit 1
export PYTHONPATH=/tmp/site:$TREE SITE=/tmp/site PYTHONUNBUFFERED=1
python3 benchmarks/gpu_session.py --out "$OUT" --upstream-cmd "$UPSTREAM" --weights-dir /tmp/pw-full \
    --old-tree "$ROOT" "$@"
