#!/usr/bin/env bash
# One call on the GPU machine (one H200), from the repository root, with .whl, .oracle/upstream, .oracle/wheels and
# .gpu-shared (a copy of ../shared) carried:  bash benchmarks/gpu_call.sh A|B|C   (results in $OUT)
#   A: upstream's bench_gpu.py; the eager step with and without CUDA graphs (+ TAESD), stream, the animate job body;
#      loading in a fresh process; the whole `personalive animate` command on a 10 s clip; the AOTInductor package
#      built in the background on cores the measurements do not use, then loaded, verified and timed.
#   B: upstream's bench_gpu.py; --backend compile (first compilation, graphs on/off, TAESD, VAE modes), the warm
#      start in a fresh process; the whole animate command on a 60 s clip (host memory against the 10 s clip).
#   C: the AOTInductor probe (toy packages; the package of call B, carried back as .gpu-pkg); the eager graphs rows;
#      loading; the whole animate command on a 10 s and a 60 s clip.  D: loading and the animate rows only.
#   E: the sync probe, end to end, LOAD's branch (carry .gpu-load), the AOTInductor probe under cuda-gdb.
#   F: build-engine --format compile-cache, its warm start in a fresh process and verify-engine; the AOTI probe.
#   G: the compile cache in default modes, bf16 / fp8 (precision_gpu) beside it, LOAD's branch (carry .gpu-load).
#   H: the AOTInductor fixes on toys; the full-size package built with the product's options, run and verified.
#   I: the full-size package built with CXX=/usr/bin/g++ (shared libstdc++), upstream, then run, verified, animate.
#   K: the fp32 ONNX verified beside the package's rebuild; upstream; the package with graphs; animate on it.
#   L: (next session) the package's first load with / without the load options; animate on it and eager.
#   M: (next session) the fp32 ONNX check again, the reference without TF32.
#   N: (fifth session) where the job body's GPU idles (profile), the encoder in a child process vs a thread, the
#      whole animate with each, the first load of a toy AOTInductor package profiled.
#   O: (next session) the AOTInductor first load with the ISA sub-tests skipped too: the package built, upstream,
#      its first load in fresh processes (with / without the product's load context), animate on it; packed back.
#   P: (sixth session) upstream; the fp32 ONNX check (M) beside the eager fast path vs before and the step profile;
#      the whole eager animate.
#   Q: (sixth session) the eager fast path incl. the transformers' token layouts vs before; upstream.
#   R: (seventh session) the fast path and the code before against an fp32 copy (fp16 deviations), cuDNN heuristics
#      vs autotuning; the whole eager animate with its new stage timings: default, cuDNN autotuning, CUDA graphs,
#      and once under cProfile (where the time outside the loop goes); upstream after the step rows.
#   S: (seventh session) the machine's Python environment (bytecode caches, installed packages); the wheels
#      byte-compiled as pip would; upstream; the whole eager animate twice (loading by phase), with CUDA's eager
#      module loading, and under cProfile with callers.
#   T: (seventh session) as a normal install runs: bytecode compiled for every installed package (pip does it at
#      install; this machine's torch ships none and sets PYTHONDONTWRITEBYTECODE=1); upstream; the whole eager
#      animate twice; the whole animate on the sixth session's AOTInductor package (carry .gpu-pkg) twice.
#   U: (eighth session) the first calls' cost with / without the warm-up thread; the package rebuilt (cores 8-15)
#      beside the whole eager animate, the code before (.gpu-base) against now; upstream; animate on the package.
#   V: (eighth session) upstream; U's package verified and timed beside eager; the loop's GPU time by stage (eager,
#      aoti); the first reference and step profiled; the whole animate, eager and aoti.
#   W: (eighth session) quiet: eager now against the code before (.gpu-base), alternating; aoti on 8 / 16 cores.
#   X: (ninth session) upstream; the GPU tests of the warm-up and plan book; the whole eager animate, alternating: the
#      code before (.gpu-base), now with a recorded plan book (the first run records it), now with runtime.plan_cache
#      off (the weights' prefetch beside the imports alone).
#   Y: (ninth session) upstream; a plan book recorded; then alternating the code before (.gpu-base) and variants of
#      now, each a copy of the tree with its constants edited: no prefetch, no prefetch with a 0.2 ms switch
#      interval beside the imports, one prefetch worker with that interval (ran at 38c3147: the prefetch was removed
#      after this call, having paid nothing; so was the switch interval, which changed little).
#   Z: (ninth session) upstream; the GPU tests of the plan book; a book recorded by a whole animate; its replay
#      (TorchScript) beside the imports; the whole eager animate, the code before against now, alternating; the
#      replay alone, and from Python beside the imports (replay_probe, fresh processes); stops where the time ends.
#   AA: (tenth session) upstream; the GPU tests (plan book, split GroupNorm); the eager step with the split GroupNorm
#      against PyTorch's kernels and the code before the sixth session, with an fp32 reference; the step's profile
#      (0 keyframes); the whole eager
#      animate, the code before (.gpu-base) against now, alternating, both with a plan book.
#   AB: (tenth session, after AA) upstream; the step variants again, each graphed variant captured inside its own
#      context (AA's were all captured on the fast path); the whole eager animate twice with a plan book.
#   AC: (tenth session, last minutes) the GPU tests of the plan book and the split GroupNorm (bf16 added).
#   AD: (eleventh session) upstream; the GPU tests of CUDA graphs and GroupNorm; the step variants with the VAE decoder
#      channels-last; the whole eager animate with CUDA graphs on, captured as before (.gpu-base) and as now, and
#      off (the default), alternating, all with a plan book.
#   AE: (eleventh session, after AD) upstream; the GPU tests; where the eager job's loop waits with CUDA graphs on:
#      the sync probe and the loop profile, graphs off / on; the whole eager animate with the decoder channels-last.
#   AF: (eleventh session, last minutes) the GPU tests of the compiled step's graphs (inductor's default mode) and of
#      the graphs; the whole eager animate with the new defaults (graphs on, decoder channels-last).
#   AG: (twelfth session) upstream; every SDPA call of the eager step (3 keyframes) timed under each backend, and the
#      whole step with each backend first and with each call routed to its fastest (attention_backends).
#   AH: (twelfth session, after AG) upstream; the GPU tests of the eager attention kernels (and graphs, GroupNorm, plan
#      book); attention_backends (the product's kernels against SDPA over the joined keys); the whole eager animate.
#   AI: (twelfth session, after AH) upstream; the GPU tests; the step variants (the joined attention, diffusers'
#      residual blocks, against the product); the step's profile at 3 keyframes; the whole eager animate.
#   AJ: (twelfth session, last call) upstream; the GPU tests (reported, not stopping); the step variants (the
#      channels-last GroupNorm statistics in one reduction, the VAE's conv1 bias in norm2); the whole eager animate.
#   AK: (twelfth session, after AJ's flat frames) the GPU tests of GroupNorm (fp16 overflow, the folded bias); the whole
#      eager animate (its output's size says whether the frames are pictures); upstream last.
#   AL: (thirteenth session) upstream; the GPU tests; the step variants at 0 and 3 keyframes (the product after the
#      VAE's folded bias; two candidate channels-last statistics); the whole animate. AM: the same after the change.
#   AN: (thirteenth session) upstream; `animate --backend compile` three times on one compile cache: the first
#      compilation, then two warm starts in fresh processes. AO: the graphs GPU tests, then the same with the VAE in
#      inductor's default mode.
#   AP: (fourteenth session) the compile backend's first and warm starts with dynamo's compile statistics and
#      recompile reasons; a plan book recorded and the whole eager animate.
#   AQ: (fourteenth session) upstream; the step alone with graphs: eager, compile, compile over a channels-last decoder.
#   AR: (fourteenth session) the job body's loop profiled (GPU time by stage, idle gaps), eager against compile.
#   AS: (fifteenth session) upstream; the step alone with graphs: eager, the UNet compiled block by block (regional),
#      then whole in a fresh process and cache; the GPU tests of the compiled step's graphs (both scopes).
#   AT: (fifteenth session) `animate --backend compile`, the UNet regional and whole: both first runs at once beside
#      the GPU tests of the compiled step, then a warm start of each in a fresh process, with dynamo's statistics.
#   AU: (fifteenth session) the GPU tests of the compiled step's graphs (both scopes) and of the graphs, alone.
#   AV: (sixteenth session) why the whole compile command's windows are slower than its step: a cold first run
#      (24 frames) fills the compile cache, then warm 300-frame commands -- plain, with x264's fastest preset, the
#      eager backend, under the compile-statistics wrapper of calls AP/AT -- each beside a CPU sampler.
#   AW: (sixteenth session) the window step precompiled with torch.compile's aot_compile: compiled and saved, then
#      loaded in a fresh process (load time, output against eager, the step's time); upstream last.
#   AX: (seventeenth session) the product's precompiled step: `build-engine --format precompiled` (compile time,
#      file size), then a fresh `animate --backend compile` that loads it (warm start without tracing, steady
#      windows), verify-engine of the file if time is left; upstream last.
#   AY: (eighteenth session) AX again after its fix: the build on cores 0-7, verify-engine and animate on all cores.
#   AZ: (eighteenth session) the precompiled step with TAESD: build, a fresh animate, upstream, verify-engine.
#   BA: (eighteenth session) the eager fp16 step against fp32 with each decoder (benchmarks/decoder_precision.py).
#   BB: (nineteenth session) the job's imports by module (-X importtime); the precompiled step with TAESD without the
#      module's guards: build, verify-engine (the own-precision rule), a fresh animate (its load); upstream.
#   BC: (nineteenth session) the same with the default decoder: build, a fresh animate (the warm start), verify-engine;
#      upstream.
#   BD: (nineteenth session) as a normal install (bytecode for every package, compileall as pip does): the job's
#      imports by module, the precompiled step (default decoder) built, two fresh animates on it; upstream.
#   J: the full-size ONNX verified on onnxruntime's CPU provider; the VAE decode alone in three modes.
# SIZE=tiny DEVICE=cpu runs the same steps on a CPU as a smoke test.
set -u
CALL=${1:?A, B or C}; FINAL=${OUT:?}; OUT=$FINAL/r; mkdir -p "$OUT"  # at most 8 files come back: r/ is packed
SIZE=${SIZE:-full}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
ROOT=$PWD; W=${WEIGHTS:-/tmp/pw-$SIZE}; FG="taskset -c 0-7"; BG="taskset -c 8-15"
[ "$(nproc)" -lt 16 ] && FG="" && BG=""
log() { echo "[$(date -u +%T)] $*"; tar czf "$FINAL/results.tgz" -C "$FINAL" r 2>/dev/null; }
if [ "${SKIP_WHEELS:-0}" = 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-up .oracle/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$ROOT
fi
export PYTHONUNBUFFERED=1 SITE=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" 2>&1
E="$PY -m benchmarks.engine_gpu --weights $W --out $OUT --size $SIZE --device $DEVICE --dtype ${DTYPE:-fp16}"
TINY=$( [ "$SIZE" = tiny ] && echo "--size tiny --dtype fp32" )

upstream() {
  log upstream
  ORACLE_HOME=$ROOT/.oracle PYTHONPATH=/tmp/site-up $FG timeout 200 $PY $ROOT/.gpu-shared/oracle/bench_gpu.py \
    --frames ${UP_FRAMES:-96} --runs upstream,no_hkf --skip-micro --out "$OUT/upstream" $TINY > "$OUT/upstream.log" 2>&1
  echo "upstream rc=$?"; rm -f "$OUT/upstream/windows.csv"; grep -i "steady\|fps" "$OUT/upstream.log" | tail -n 6
}
animate() {  # frames tag [extra animate options]
  log "animate $1 frames ($2)"
  $FG timeout ${ANIMATE_TIMEOUT:-200} $PY -m benchmarks.animate_command --weights "$W" --frames "$1" \
    --out "$OUT/animate-$2.json" ${ANIMATE_ARGS:-} -- "${@:3}" 2>&1 | tail -n 3
}

aoti_build() {  # [TASKSET]: the package built with the system's g++ (the machine's CXX links libstdc++ statically)
  log "aoti-build with CXX=/usr/bin/g++ ${1:-(all cores)}"
  CXX=/usr/bin/g++ ${1:-} timeout ${AOTI_BUILD_TIMEOUT:-330} $E aoti-build > "$OUT/aoti-build.log" 2>&1
  echo "aoti-build rc=$?" >> "$OUT/aoti-build.log"; grep -v Warning "$OUT/aoti-build.log" | tail -n 2
}
aoti_run() {  # [NAME=VALUE ...]: verify-engine (unless AOTI_SKIP_VERIFY=1), load and step rows, a fresh process
  log aoti-run; (env "$@" timeout ${AOTI_RUN_TIMEOUT:-200} $PY -X faulthandler -m benchmarks.engine_gpu \
    --weights $W --out $OUT --size $SIZE --device $DEVICE --dtype ${DTYPE:-fp16} aoti-run > "$OUT/aoti-run.log" 2>&1
    echo "aoti-run rc=$?" >> "$OUT/aoti-run.log")
  grep -v Warning "$OUT/aoti-run.log" | grep -v "^ " | tail -n 14
}
package() { ls /tmp/engine-work/*.pt2 2>/dev/null | head -n 1; }
pack_package() {  # compressed (generated code and kernels), so that a later call can carry it back
  local pkg; pkg=$(package)
  [ -n "$pkg" ] && xz -T8 -3 -c "$pkg" | split -b 15M - "$FINAL/$(basename "$pkg").xz." && cp "$pkg.json" "$FINAL/"
}
animate_package() {  # [ANIMATE OPTIONS]: the whole command on the package, 300 frames
  local pkg; pkg=$(package)
  [ -n "$pkg" ] && ANIMATE_TIMEOUT=${AOTI_ANIMATE_TIMEOUT:-110} animate ${CLIP_FRAMES:-300} 10s-aoti${AOTI_TAG:-} \
    --backend aoti --engine "$pkg" "$@"
}

compile_site() {  # bytecode for every installed package, as a normal install has (pip compiles at install)
  local site; site=$($PY -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
  log "compileall"; timeout 150 $PY -m compileall -q -j 16 "$site" /tmp/site "$ROOT/personalive" > "$OUT/compileall.log" 2>&1
}
plan_gpu_tests() {  # [MORE TEST FILES]
  log "gpu tests"; timeout ${GPU_TESTS_TIMEOUT:-120} $PY -m pytest -q -rf --tb=short -p no:cacheprovider -m gpu tests/test_device_warmup.py \
    tests/test_device_plans.py "$@" > "$OUT/gpu-tests.log" 2>&1; tail -n 2 "$OUT/gpu-tests.log"
}
step_variants_graphed() {  # the step variants (2 rounds); prints each variant's graphed median
  log step-variants; $FG timeout ${VARIANTS_TIMEOUT:-240} $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" \
    --device $DEVICE --size $SIZE --rounds 2 > "$OUT/step-variants.log" 2>&1
  grep -v Warning "$OUT/step-variants.log" | grep -o "'[a-z -]*+graphs_ms': [0-9.]*" | tr '\n' ' '; echo
}
sampled() {  # TAG COMMAND...: the command with benchmarks.cpu_sampler beside it (CPU by process, cpu-TAG.json)
  $PY -m benchmarks.cpu_sampler --out "$OUT/cpu-$1.json" & local sampler=$!
  "${@:2}"; kill -TERM $sampler; wait $sampler
}
record_book() {  # a fresh plan-book folder, and a whole animate that records this run's book into it
  export PERSONALIVE_CACHE_DIR=/tmp/plan-cache; rm -rf "$PERSONALIVE_CACHE_DIR"
  animate ${CLIP_FRAMES:-300} 10s-record
}

log "call $CALL start"
[ "$CALL" = C ] || [ "$CALL" = Q ] || [ "$CALL" = AC ] || [ "$CALL" = AG ] || [ "$CALL" = AR ] || [ "$CALL" = AU ] || $E init 2>&1 | tail -n 1  # C: graphs_gpu writes the weights; Q needs none
case $CALL in
A)
  log "aoti-build (background, cores 8-15)"
  [ "${SKIP_AOTI:-0}" = 1 ] || ($BG timeout 480 $E aoti-build > "$OUT/aoti-build.log" 2>&1; echo "aoti-build rc=$?" >> "$OUT/aoti-build.log") &
  BUILD=$!
  upstream
  log graphs; $FG timeout 240 $PY -m benchmarks.graphs_gpu --out "$OUT" --size $SIZE --device $DEVICE \
    --weights $W ${GRAPHS_ARGS:-} 2>&1 | grep -v Warning | tail -n 4
  log load; $FG timeout 120 $PY -m benchmarks.load_breakdown --weights $W --device $DEVICE --out "$OUT/load.json" \
    2>&1 | tail -n 3
  animate ${CLIP_FRAMES:-300} 10s
  [ "${SKIP_AOTI:-0}" = 1 ] && { log done; exit 0; }
  log "waiting for aoti-build"; wait $BUILD; tail -n 4 "$OUT/aoti-build.log"
  log aoti-run; timeout 200 $E aoti-run 2>&1 | grep -v Warning | tail -n 12
  PKG=$(ls /tmp/engine-work/*.pt2 2>/dev/null | head -n 1)
  if [ -n "$PKG" ]; then  # files of at most 16 MiB come back
    # compressed (generated code and kernels: several times smaller), so that call C can carry it with the wheels
    xz -T8 -3 -c "$PKG" | split -b 15M - "$FINAL/$(basename "$PKG").xz."
    cp "$PKG.json" "$FINAL/"; ls -la "$FINAL"
  fi
  ;;
B)
  [ "${SKIP_AOTI:-0}" = 1 ] || ($BG timeout 400 $E aoti-build > "$OUT/aoti-build.log" 2>&1; echo "aoti-build rc=$?" >> "$OUT/aoti-build.log") &
  BUILD=$!
  upstream
  log "compile (${ENGINE_SET:-product defaults})"; $FG timeout ${COMPILE_TIMEOUT:-300} $E compile 2>&1 | grep -v Warning | tail -n 16
  [ "${SKIP_AOTI:-0}" = 1 ] && { log done; exit 0; }
  log "waiting for aoti-build"; wait $BUILD; tail -n 3 "$OUT/aoti-build.log"
  # a generated wrapper at -O0 may need a large stack frame: run with an unlimited stack, Python stacks on a crash
  log aoti-run; (ulimit -s unlimited; timeout ${AOTI_RUN_TIMEOUT:-150} $PY -X faulthandler -m benchmarks.engine_gpu --weights $W --out $OUT \
    --size $SIZE --device $DEVICE --dtype ${DTYPE:-fp16} aoti-run > "$OUT/aoti-run.log" 2>&1; echo "aoti-run rc=$?" >> "$OUT/aoti-run.log")
  grep -v Warning "$OUT/aoti-run.log" | tail -n 25
  PKG=$(ls /tmp/engine-work/*.pt2 2>/dev/null | head -n 1)
  [ -n "$PKG" ] && xz -T8 -3 -c "$PKG" | split -b 15M - "$FINAL/$(basename "$PKG").xz." && cp "$PKG.json" "$FINAL/"
  log compile-warm; $FG timeout ${WARM_TIMEOUT:-100} $E compile-warm 2>&1 | tail -n 2
  ;;
C)
  upstream
  PKG=""; for f in .gpu-pkg/*.pt2.xz.aa; do [ -f "$f" ] || continue; mkdir -p /tmp/engine-work
    PKG=/tmp/engine-work/$(basename "${f%.xz.aa}"); cat "${f%.aa}".a? | xz -d > "$PKG"; done
  log "aoti probe (background, cores 8-15)"
  ($BG timeout 420 $PY -m benchmarks.aoti_probe --out "$OUT/aoti-probe.json" --device $DEVICE ${PKG:+--package $PKG} \
    > "$OUT/aoti-probe.log" 2>&1; echo "probe rc=$?" >> "$OUT/aoti-probe.log") &
  PROBE=$!
  log graphs; $FG timeout 200 $PY -m benchmarks.graphs_gpu --out "$OUT" --size $SIZE --device $DEVICE \
    --weights $W ${GRAPHS_ARGS:-} 2>&1 | grep -v Warning | tail -n 4
  log load; $FG timeout 150 $PY -m benchmarks.load_breakdown --weights $W --device $DEVICE --repeat 2 \
    --modes new,plain --threads 1,4 --out "$OUT/load.json" 2>&1 | tail -n 4
  animate ${CLIP_FRAMES:-300} 10s
  animate ${LONG_FRAMES:-1798} 60s
  log "waiting for the probe"; wait $PROBE; tail -n 3 "$OUT/aoti-probe.log"
  ;;
D)  # the loading and whole-command rows again, after fixes (no upstream: no ratio is taken from them)
  log load; $FG timeout 100 $PY -m benchmarks.load_breakdown --weights $W --device $DEVICE --repeat 1 \
    --modes new,plain --threads 4 --out "$OUT/load.json" 2>&1 | tail -n 4
  animate ${CLIP_FRAMES:-300} 10s
  animate ${LONG_FRAMES:-1798} 60s
  animate ${CLIP_FRAMES:-300} 10s-nographs --set runtime.cuda_graphs=off
  ;;
E)  # third session: where the host waits (sync probe), end to end after the keyframe-decision change, LOAD's
    # background copier (branch `load`, carried as .gpu-load/tree) against main's loader, the whole command
  log "aoti probe with cuda-gdb (background, cores 8-15)"
  ($BG timeout 480 $PY -m benchmarks.aoti_probe --out "$OUT/aoti-probe.json" --device $DEVICE --debugger \
    > "$OUT/aoti-probe.log" 2>&1; echo "probe rc=$?" >> "$OUT/aoti-probe.log") &
  PROBE=$!
  upstream
  log "sync probe"; $FG timeout 200 $PY -m benchmarks.sync_probe --out "$OUT/sync.json" --size $SIZE --device $DEVICE \
    --frames ${SYNC_FRAMES:-64} 2>&1 | grep -v Warning | tail -n 3
  log graphs; $FG timeout 240 $PY -m benchmarks.graphs_gpu --out "$OUT" --size $SIZE --device $DEVICE \
    ${GRAPHS_ARGS:-} 2>&1 | grep -v Warning | tail -n 4
  if [ -d .gpu-load/tree ]; then
    log "load: branch load (copier) vs main"
    (cd .gpu-load/tree && PYTHONPATH=$SITE:$PWD $FG timeout 150 $PY -m benchmarks.load_breakdown --weights $W \
      --device $DEVICE --repeat 2 --modes new,plain --threads 1,4 --staging pageable,pinned \
      --out "$OUT/load-branch.json" 2>&1 | tail -n 6)
    (cd .gpu-load/tree && PYTHONPATH=$SITE:$PWD timeout 120 $PY -m pytest -q -p no:cacheprovider \
      tests/weights/test_fast_load.py tests/weights/test_materialize.py > "$OUT/load-branch-tests.log" 2>&1; tail -n 3 "$OUT/load-branch-tests.log")
  fi
  log "load: main"; $FG timeout 100 $PY -m benchmarks.load_breakdown --weights $W --device $DEVICE --repeat 2 \
    --modes new --out "$OUT/load.json" 2>&1 | tail -n 3
  animate ${CLIP_FRAMES:-300} 10s
  log "waiting for the probe"; wait $PROBE; tail -n 3 "$OUT/aoti-probe.log"
  ;;
F)  # third session: the compile-cache engine at full size (the product's compile modes); the AOTInductor probe
  log "aoti probe with cuda-gdb (background, cores 8-15)"
  ($BG timeout 500 $PY -m benchmarks.aoti_probe --out "$OUT/aoti-probe.json" --device $DEVICE --debugger \
    > "$OUT/aoti-probe.log" 2>&1; echo "probe rc=$?" >> "$OUT/aoti-probe.log") &
  PROBE=$!
  log "compile-cache build"; TORCHINDUCTOR_CACHE_DIR=/tmp/ind-build $FG timeout ${CC_BUILD_TIMEOUT:-330} $E cc-build \
    2>&1 | grep -v Warning | tail -n 3
  log "compile-cache run (a fresh process, an empty inductor cache)"; rm -rf /tmp/ind-empty
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-empty $FG timeout 170 $E cc-run 2>&1 | grep -v Warning | tail -n 8
  log "waiting for the probe"; kill $PROBE 2>/dev/null; tail -n 2 "$OUT/aoti-probe.log"
  ;;
G)  # third session, last call: the compile cache in the default modes (the max-autotune VAE alone overran call F's
    # 330 s build), bf16 / fp8 alongside it on the other cores (relative rows only), LOAD's fixed branch
  log "precision (background, cores 0-7)"
  ($FG timeout ${PREC_TIMEOUT:-250} $PY -m benchmarks.precision_gpu --weights $W --out "$OUT/precision.json" \
    --size $SIZE --device $DEVICE ${PREC_ARGS:-} > "$OUT/precision.log" 2>&1; echo "precision rc=$?" >> "$OUT/precision.log") &
  PREC=$!
  export ENGINE_SET=runtime.compile_vae_mode=default
  log "compile-cache build (default modes, cores 8-15)"; TORCHINDUCTOR_CACHE_DIR=/tmp/ind-build $BG timeout \
    ${CC_BUILD_TIMEOUT:-230} $E cc-build 2>&1 | grep -v Warning | tail -n 2
  log "waiting for precision"; wait $PREC; grep -v Warning "$OUT/precision.log" | tail -n 10
  log "compile-cache run (a fresh process, an empty inductor cache)"; rm -rf /tmp/ind-empty
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-empty $FG timeout 140 $E cc-run 2>&1 | grep -v Warning | tail -n 8
  unset ENGINE_SET
  if [ -d .gpu-load/tree ]; then
    log "load: branch load (copier) vs main"
    (cd .gpu-load/tree && PYTHONPATH=$SITE:$PWD timeout 60 $PY -m pytest -q -p no:cacheprovider \
      tests/weights/test_fast_load.py tests/weights/test_materialize.py > "$OUT/load-branch-tests.log" 2>&1; tail -n 3 "$OUT/load-branch-tests.log")
    (cd .gpu-load/tree && PYTHONPATH=$SITE:$PWD $FG timeout 120 $PY -m benchmarks.load_breakdown --weights $W \
      --device $DEVICE --repeat 2 --modes new --threads 4 --staging pageable,pinned \
      --out "$OUT/load-branch.json" 2>&1 | tail -n 4)
    log "load: main"; $FG timeout 60 $PY -m benchmarks.load_breakdown --weights $W --device $DEVICE --repeat 2 \
      --modes new --out "$OUT/load.json" 2>&1 | tail -n 1
  fi
  ;;
H)  # fourth session: the AOTInductor crash is std::regex in the package's wrapper, which the machine's g++ links
    # with a static libstdc++ (its own std::locale): the fixes on toys (probe --fixes), the full-size package built
    # with the fix in the product's options, loaded, verified and timed beside the eager step and upstream
  log "aoti-build (background, cores 8-15)"
  ($BG timeout ${AOTI_BUILD_TIMEOUT:-330} $E aoti-build > "$OUT/aoti-build.log" 2>&1; echo "aoti-build rc=$?" >> "$OUT/aoti-build.log") &
  BUILD=$!
  upstream
  log "aoti probe --fixes"; $FG timeout 150 $PY -m benchmarks.aoti_probe --out "$OUT/aoti-probe.json" --device $DEVICE \
    --fixes > "$OUT/aoti-probe.log" 2>&1; tail -n 1 "$OUT/aoti-probe.log"
  log "waiting for aoti-build"; wait $BUILD; grep -v Warning "$OUT/aoti-build.log" | tail -n 3
  aoti_run AOTI_EAGER_ROWS=1
  pack_package
  animate_package --set runtime.cuda_graphs=on  # graphs on: a capture per keyframe count, no compilation
  ;;
I)  # fourth session, after H: the machine's default compiler (CXX, /opt/gcc/bin/g++) links libstdc++ statically;
    # the product now refuses such a package; built with the system's g++ it should load
  { echo "CXX=${CXX:-unset}"; command -v g++; head -c 1200 /opt/gcc/bin/g++ 2>&1 | tr -c '[:print:]\n' '?'; } \
    > "$OUT/toolchain.txt" 2>&1
  aoti_build
  upstream
  aoti_run AOTI_EAGER_ROWS=1
  animate_package --set runtime.cuda_graphs=on
  ;;
K)  # fourth session, last call: the full-size fp32 ONNX verified on onnxruntime's CPU provider (cores 0-7) while
    # the package is rebuilt with CXX=/usr/bin/g++ (cores 8-15); upstream on a quiet machine; the package loaded
    # single-threaded (CUDA graphs capture it), step rows; the whole animate on it (graphs on, the default)
  log "onnx export + verify, fp32 (background, cores 0-7)"
  ($FG timeout ${ONNX_TIMEOUT:-370} $PY -m benchmarks.engine_gpu --weights $W --out $OUT --size $SIZE --device $DEVICE \
    --dtype fp32 onnx-verify > "$OUT/onnx.log" 2>&1; echo "onnx rc=$?" >> "$OUT/onnx.log") &
  ONNX=$!
  aoti_build "$BG"
  log "waiting for onnx"; wait $ONNX; grep -v Warning "$OUT/onnx.log" | grep -v "^ " | tail -n 12
  upstream
  AOTI_RUN_TIMEOUT=${AOTI_RUN_TIMEOUT:-100} aoti_run AOTI_SKIP_VERIFY=1
  animate_package
  pack_package
  ;;
L)  # for the fifth session: the first-load fix (no CPU-ISA test builds), measured in fresh processes; the whole
    # animate on the package; then (M) the fp32 ONNX check again with the reference's TF32 off
  aoti_build
  upstream
  log aoti-load; timeout 400 $E aoti-load 2>&1 | grep "first load" | tail -n 3
  AOTI_ANIMATE_TIMEOUT=${AOTI_ANIMATE_TIMEOUT:-120} animate_package
  animate ${CLIP_FRAMES:-300} 10s
  ;;
N)  # fifth session: the job body's idle GPU; the encoder in a child process; the AOTInductor load's fixed cost
  upstream
  log loop-profile; $FG timeout ${LOOP_TIMEOUT:-260} $PY -m benchmarks.loop_profile --out "$OUT/loop-profile.json" \
    --size $SIZE --device $DEVICE ${LOOP_ARGS:-} \
    --variants media.encode_process=off,media.encode_process=on,media.encode_process=on+runtime.cuda_graphs=on \
    > "$OUT/loop-profile.log" 2>&1; echo "loop-profile rc=$?" >> "$OUT/loop-profile.log"
  grep -v Warning "$OUT/loop-profile.log" | grep "loop_profile\|rc=" | cut -c1-400 | tail -n 4
  animate ${CLIP_FRAMES:-300} 10s-process
  animate ${CLIP_FRAMES:-300} 10s-thread --set media.encode_process=off
  log aoti-load-profile; CXX=/usr/bin/g++ timeout ${AOTI_LOAD_TIMEOUT:-150} $PY -m benchmarks.aoti_load_profile \
    --out "$OUT/aoti-load-profile.json" --device $DEVICE 2>&1 | grep -v Warning | tail -n 4
  log done
  ;;
O)  # sixth session: aoti_wrapper.loading() skips the ISA sub-tests too (call N's profile); predicted < 5 s. Beside
    # the build (CPU-bound), where the eager step's GPU time goes (kernel times, unaffected by the build's CPU use)
  log isa-probe; timeout 120 $PY -m benchmarks.isa_probe --out "$OUT/isa.json" 2>&1 | tail -n 2
  log "step-profile (background)"
  (timeout 200 $PY -m benchmarks.step_profile --out "$OUT/step-profile.json" --device $DEVICE --size $SIZE \
    > "$OUT/step-profile.log" 2>&1; echo "step-profile rc=$?" >> "$OUT/step-profile.log"
   timeout 150 $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" --device $DEVICE --size $SIZE \
    > "$OUT/step-variants.log" 2>&1; echo "step-variants rc=$?" >> "$OUT/step-variants.log") &
  PROFILE=$!
  aoti_build
  log "waiting for step-profile and step-variants"; wait $PROFILE
  grep -v Warning "$OUT/step-profile.log" | tail -n 2; grep -v Warning "$OUT/step-variants.log" | tail -n 3
  pack_package  # so that a later call can carry the package back instead of building it again (~270 s)
  upstream
  # the control without the load options (L: 53.7 s) is left out for time: isa_probe above is the control
  log aoti-load; AOTI_LOAD_MODES=with,with timeout 200 $E aoti-load 2>&1 | grep "first load" | tail -n 3
  AOTI_ANIMATE_TIMEOUT=${AOTI_ANIMATE_TIMEOUT:-120} animate_package
  log done
  ;;
P)  # sixth session, second call: upstream on a quiet machine; then the fp32 ONNX check with the reference's TF32 off
    # (case M) on cores 0-11 beside the eager fast path against the code before (alternating rounds, GPU-timed) and
    # the step profile again on cores 12-15; the whole eager animate last, alone
  upstream
  log "onnx export + verify, fp32, reference without TF32 (background, cores 0-11)"
  (${FG:+taskset -c 0-11} timeout ${ONNX_TIMEOUT:-380} $PY -m benchmarks.engine_gpu --weights $W --out $OUT \
    --size $SIZE --device $DEVICE --dtype fp32 onnx-verify > "$OUT/onnx.log" 2>&1; echo "onnx rc=$?" >> "$OUT/onnx.log") &
  ONNX=$!
  SIDE=${FG:+taskset -c 12-15}
  log step-variants; $SIDE timeout 150 $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" --device $DEVICE \
    --size $SIZE > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | tail -n 3
  log step-profile; $SIDE timeout 150 $PY -m benchmarks.step_profile --out "$OUT/step-profile.json" --device $DEVICE \
    --size $SIZE --keyframes 0 > "$OUT/step-profile.log" 2>&1; grep -v Warning "$OUT/step-profile.log" | tail -n 2
  log "waiting for onnx"; wait $ONNX; grep -v Warning "$OUT/onnx.log" | grep -v "^ " | tail -n 9
  animate ${CLIP_FRAMES:-300} 10s-eager
  ;;
Q)  # sixth session, last ~5 minutes of device time: the fast path with the transformers' token layouts against the
    # code before (random weights in memory, no files), then upstream (last: the call may be cut short)
  log step-variants; timeout 150 $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" --device $DEVICE \
    --size $SIZE --rounds 3 > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | tail -n 3
  upstream
  ;;
R)  # seventh session: is the fast path's fp16 output as close to an fp32 run as the code before's; does cuDNN's
    # autotuning pay (the product leaves it off, the benchmarks had it on); the whole command's stages
  log step-variants; timeout 200 $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" --device $DEVICE \
    --size $SIZE --rounds 3 --fp32-reference > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | tail -n 3
  upstream
  animate ${CLIP_FRAMES:-300} 10s-eager
  animate ${CLIP_FRAMES:-300} 10s-cudnn-benchmark --set runtime.cudnn_benchmark=true
  animate ${CLIP_FRAMES:-300} 10s-graphs --set runtime.cuda_graphs=on
  ANIMATE_ARGS="--profile $OUT/animate-profile.txt" animate ${CLIP_FRAMES:-300} 10s-profiled
  ;;
S)  # seventh session, second call: where loading's time goes on this machine, and the first calls' cost
  log env; $PY - > "$OUT/env.json" 2>&1 <<'PY'
import importlib.metadata as md, importlib.util as iu, json, os, pathlib, sys, torch
root = pathlib.Path(torch.__file__).parent
print(json.dumps({
    "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"), "dont_write_bytecode": sys.flags.dont_write_bytecode,
    "pycache_prefix": sys.pycache_prefix, "torch_dir_writable": os.access(root, os.W_OK),
    "torch_pyc": sum(1 for _ in root.rglob("*.pyc")), "torch_py": sum(1 for _ in root.rglob("*.py")),
    "distributions": len(list(md.distributions())),
    "present": {m: iu.find_spec(m) is not None for m in ("peft", "torchao", "xformers", "flash_attn", "triton", "accelerate")},
}, indent=1))
PY
  cat "$OUT/env.json" | tr -d '\n' | head -c 600; echo
  if [ "${SKIP_WHEELS:-0}" = 0 ]; then  # as pip install does by default (the wheels went in with --no-compile)
    log compileall; /usr/bin/time -f "compileall %e s" $PY -m compileall -q -j 16 /tmp/site 2>&1 | tail -n 1
  fi
  upstream
  animate ${CLIP_FRAMES:-300} 10s-eager
  animate ${CLIP_FRAMES:-300} 10s-eager-2
  CUDA_MODULE_LOADING=EAGER animate ${CLIP_FRAMES:-300} 10s-eager-module-loading
  ANIMATE_ARGS="--profile $OUT/animate-profile.txt" animate ${PROFILE_FRAMES:-120} 4s-profiled
  ;;
T)  # seventh session, third call: the whole command as a normal installation runs it
  SITE_PKGS=$($PY -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
  log "compileall $SITE_PKGS /tmp/site"
  /usr/bin/time -f "compileall %e s" timeout 150 $PY -m compileall -q -j 16 "$SITE_PKGS" /tmp/site > "$OUT/compileall.log" 2>&1
  tail -n 1 "$OUT/compileall.log"
  upstream
  animate ${CLIP_FRAMES:-300} 10s-eager
  animate ${CLIP_FRAMES:-300} 10s-eager-2
  for f in .gpu-pkg/*.pt2.xz.aa; do [ -f "$f" ] || continue; mkdir -p /tmp/engine-work
    P=/tmp/engine-work/$(basename "${f%.xz.aa}"); cat "${f%.aa}".a? | xz -d > "$P"; cp "${f%.xz.aa}.json" "$P.json"; done
  animate_package
  AOTI_TAG=2 animate_package
  ;;
U)  # eighth session: the first calls' cost and the warm-up thread (probe); the AOTInductor package rebuilt from
    # today's code on cores 8-15 while the whole eager animate alternates between the code before (.gpu-base: the
    # last landed commit) and now; upstream; the whole animate on the new package, graphs auto (off) / on
  compile_site
  log first-calls; timeout 120 $PY -m benchmarks.first_calls --out "$OUT/first-calls.json" --device $DEVICE 2>&1 | tail -n 4
  BUILD=""
  if [ "${SKIP_AOTI:-0}" = 0 ]; then aoti_build "$BG" & BUILD=$!; fi
  for i in 1 2; do
    [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-$i)
    animate ${CLIP_FRAMES:-300} 10s-new-$i
  done
  animate ${CLIP_FRAMES:-300} 10s-new-graphs --set runtime.cuda_graphs=on
  [ -n "$BUILD" ] && { log "waiting for aoti-build"; wait $BUILD; }
  pack_package
  upstream
  animate_package
  AOTI_TAG=-graphs animate_package --set runtime.cuda_graphs=on
  ;;
V)  # eighth session, second call: upstream; call U's package (carry .gpu-pkg) verified and timed beside the eager
    # step; the loop's GPU time by stage, eager and aoti; the first reference and step profiled; the whole animate
  compile_site
  for f in .gpu-pkg/*.pt2.xz.aa; do [ -f "$f" ] || continue; mkdir -p /tmp/engine-work
    P=/tmp/engine-work/$(basename "${f%.xz.aa}"); cat "${f%.aa}".a? | xz -d > "$P"; cp "${f%.xz.aa}.json" "$P.json"; done
  upstream
  AOTI_RUN_TIMEOUT=${AOTI_RUN_TIMEOUT:-200} aoti_run
  PKG=$(package); AOTI=runtime.backend=aoti+runtime.engine=$PKG
  VARIANTS=runtime.cuda_graphs=off,runtime.cuda_graphs=on${PKG:+,$AOTI+runtime.cuda_graphs=on,$AOTI+runtime.cuda_graphs=off}
  log "loop-profile ($VARIANTS)"; timeout ${LOOP_TIMEOUT:-200} $PY -m benchmarks.loop_profile --out "$OUT/loop-profile.json" \
    --size $SIZE --device $DEVICE --weights $W --frames ${LOOP_FRAMES:-32} --timed-frames ${CLIP_FRAMES:-300} \
    --variants "$VARIANTS" --no-profile > "$OUT/loop-profile.log" 2>&1; echo "loop-profile rc=$?" >> "$OUT/loop-profile.log"
  grep "loop_profile\|rc=" "$OUT/loop-profile.log" | cut -c1-300 | tail -n 3
  log first-reference; timeout 100 $PY -m benchmarks.first_reference --weights $W --out "$OUT/first-reference.json" \
    --device $DEVICE ${FIRST_REF_ARGS:-} 2>&1 | grep '"what"' | tail -n 2
  animate ${CLIP_FRAMES:-300} 10s-eager
  animate ${CLIP_FRAMES:-300} 10s-eager-graphs --set runtime.cuda_graphs=on
  animate_package
  ;;
W)  # eighth session, last call, quiet: the whole eager command alternating between the code before (.gpu-base) and
    # now; the whole aoti command on 8 cores (as every command here) and on all 16, alternating; upstream first
  compile_site
  for f in .gpu-pkg/*.pt2.xz.aa; do [ -f "$f" ] || continue; mkdir -p /tmp/engine-work
    P=/tmp/engine-work/$(basename "${f%.xz.aa}"); cat "${f%.aa}".a? | xz -d > "$P"; cp "${f%.xz.aa}.json" "$P.json"; done
  upstream
  for i in 1 2; do
    [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-$i)
    animate ${CLIP_FRAMES:-300} 10s-new-$i
  done
  for i in 1 2; do
    AOTI_TAG=-8cores-$i animate_package
    SAVED=$FG; FG=""; AOTI_TAG=-16cores-$i animate_package; FG=$SAVED
  done
  ;;
X)  # ninth session: the plan book and the prefetch beside the imports; quiet, upstream first
  compile_site
  upstream
  plan_gpu_tests
  record_book
  for i in 1 2; do
    [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-$i)
    animate ${CLIP_FRAMES:-300} 10s-plans-$i
    animate ${CLIP_FRAMES:-300} 10s-noplans-$i --set runtime.plan_cache=false
  done
  $PY -c "import json, glob; print(json.dumps({p: {g: len(c) for g, c in json.load(open(p))['groups'].items()}
    for p in glob.glob('$PERSONALIVE_CACHE_DIR/plans/*.json')}))" > "$OUT/plan-books.json" 2>&1; cat "$OUT/plan-books.json"
  ;;
Y)  # ninth session, after X: the interpreter lock beside the imports (prefetch workers, switch interval)
  compile_site
  upstream
  variant() {  # name prefetch-threads switch-interval: a copy of the tree with loading's two constants edited
    rm -rf "/tmp/var-$1"; mkdir -p "/tmp/var-$1"; cp -r personalive benchmarks configs pyproject.toml "/tmp/var-$1/"
    sed -i "s/^PREFETCH_THREADS = .*/PREFETCH_THREADS = $2/" "/tmp/var-$1/personalive/weights/load.py"
    sed -i "s/^SWITCH_INTERVAL: float | None = .*/SWITCH_INTERVAL: float | None = $3/" "/tmp/var-$1/personalive/device_warmup.py"
    grep -h "^PREFETCH_THREADS\|^SWITCH_INTERVAL" "/tmp/var-$1/personalive/weights/load.py" "/tmp/var-$1/personalive/device_warmup.py"
  }
  variant noprefetch 0 None; variant noprefetch-si 0 0.0002; variant prefetch1-si 1 0.0002
  record_book
  for i in 1 2; do
    [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-$i)
    for v in noprefetch noprefetch-si prefetch1-si; do
      (cd /tmp/var-$v && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-$v-$i)
    done
  done
  ;;
Z)  # ninth session, after Y: the replay as one TorchScript call (no interpreter lock) beside the imports
  compile_site
  upstream
  plan_gpu_tests
  record_book
  BOOK=$(ls $PERSONALIVE_CACHE_DIR/plans/*.json 2>/dev/null | head -n 1)
  [ -n "$BOOK" ] || { echo "no plan book recorded"; exit 1; }; cp "$BOOK" "$OUT/plan-book.json"
  probe() { log "replay probe $*"; $FG timeout 120 $PY -m benchmarks.replay_probe --book "$BOOK" --device $DEVICE "$@" \
    2>&1 | grep -v Warning | cut -c1-900 | tail -n 2; }
  probe --mode beside --out "$OUT/replay-beside-script.json"
  [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-1)
  animate ${CLIP_FRAMES:-300} 10s-plans-1
  probe --mode alone --out "$OUT/replay-alone-script.json"
  [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-2)
  animate ${CLIP_FRAMES:-300} 10s-plans-2
  probe --mode beside --python --out "$OUT/replay-beside-python.json"
  ;;
AA)  # tenth session: GroupNorm's statistics over sub-rows (eager), measured alone and in the whole command
  compile_site
  upstream
  plan_gpu_tests tests/models/test_group_norm.py
  grep -q failed "$OUT/gpu-tests.log" && { log "stopped: a GPU test failed"; exit 1; }
  log step-variants; $FG timeout 230 $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" --device $DEVICE \
    --size $SIZE --rounds 3 --fp32-reference > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | cut -c1-600 | tail -n 3
  log step-profile; $FG timeout 150 $PY -m benchmarks.step_profile --out "$OUT/step-profile.json" --device $DEVICE \
    --size $SIZE --keyframes 0 > "$OUT/step-profile.log" 2>&1; tail -n 1 "$OUT/step-profile.log" | cut -c1-300
  record_book
  for i in 1 2; do
    [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-$i)
    animate ${CLIP_FRAMES:-300} 10s-now-$i
  done
  ;;
AB)
  compile_site
  upstream
  log step-variants; $FG timeout 230 $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" --device $DEVICE \
    --size $SIZE --rounds 3 > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | cut -c1-600 | tail -n 3
  record_book
  animate ${CLIP_FRAMES:-300} 10s-now-1
  animate ${CLIP_FRAMES:-300} 10s-now-2
  ;;
AC)
  plan_gpu_tests tests/models/test_group_norm.py; grep -E "passed|failed|Error" "$OUT/gpu-tests.log" | tail -n 8
  ;;
AD)  # eleventh session: cheaper captures (no discarded warm-up, no device sync), the VAE decoder channels-last
  compile_site
  upstream
  GPU_TESTS_TIMEOUT=200 plan_gpu_tests tests/backends/test_graphs.py tests/models/test_group_norm.py tests/backends/test_compiled.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1; grep -q failed "$OUT/gpu-tests.log" && { log "stopped: a GPU test failed"; exit 1; }
  log step-variants; $FG timeout ${VARIANTS_TIMEOUT:-200} $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" \
    --device $DEVICE --size $SIZE --rounds 2 > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | cut -c1-600 | tail -n 3
  record_book
  [ -d .gpu-base ] && (cd .gpu-base && export PYTHONPATH=$SITE:$PWD && animate ${CLIP_FRAMES:-300} 10s-base-graphs --set runtime.cuda_graphs=on)
  for i in 1 2; do
    animate ${CLIP_FRAMES:-300} 10s-graphs-$i --set runtime.cuda_graphs=on
    animate ${CLIP_FRAMES:-300} 10s-nographs-$i
  done
  ;;
AE)  # eleventh session, after AD: graphs on left the job's loop at ~176 ms a window (the step 148 ms): where it waits
  compile_site
  upstream
  plan_gpu_tests tests/backends/test_graphs.py tests/models/test_group_norm.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1; grep -q failed "$OUT/gpu-tests.log" && { log "stopped: a GPU test failed"; exit 1; }
  log sync-probe; $FG timeout 150 $PY -m benchmarks.sync_probe --out "$OUT/sync.json" --size $SIZE --device $DEVICE \
    --frames ${SYNC_FRAMES:-48} --graphs > "$OUT/sync.log" 2>&1; grep -v Warning "$OUT/sync.log" | grep sync_probe | tail -n 2
  log loop-profile; $FG timeout ${LOOP_TIMEOUT:-240} $PY -m benchmarks.loop_profile --out "$OUT/loop-profile.json" \
    --size $SIZE --device $DEVICE --frames ${LOOP_FRAMES:-32} --timed-frames ${TIMED_FRAMES:-120} \
    --variants runtime.cuda_graphs=off,runtime.cuda_graphs=on > "$OUT/loop-profile.log" 2>&1
  echo "loop-profile rc=$?" >> "$OUT/loop-profile.log"; grep -v Warning "$OUT/loop-profile.log" | grep "loop_profile\|rc=" | cut -c1-300 | tail -n 3
  record_book
  animate ${CLIP_FRAMES:-300} 10s-nographs-1
  animate ${CLIP_FRAMES:-300} 10s-graphs-1 --set runtime.cuda_graphs=on
  ;;
AF)  # eleventh session, last minutes: the compiled step captured without a warm-up; the new defaults end to end
  GPU_TESTS_TIMEOUT=${GPU_TESTS_TIMEOUT:-200} plan_gpu_tests tests/backends/test_graphs.py tests/backends/test_compiled.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1
  record_book
  animate ${CLIP_FRAMES:-300} 10s-default-1
  ;;
AG)  # twelfth session: the step's attention kernels (cuDNN's, FlashAttention-2's, the memory-efficient one)
  upstream
  log attention-backends; $FG timeout ${ATTENTION_TIMEOUT:-300} $PY -m benchmarks.attention_backends \
    --out "$OUT/attention-backends.json" --size $SIZE --device $DEVICE ${ATTENTION_ARGS:-} > "$OUT/attention-backends.log" 2>&1
  echo "attention-backends rc=$?" >> "$OUT/attention-backends.log"
  grep -v Warning "$OUT/attention-backends.log" | grep "totals\|keyframes\|rc=" | cut -c1-900 | tail -n 4
  ;;
AH)  # twelfth session, after AG: the reference attention over the shared tokens, the temporal ones on another kernel
  compile_site
  upstream
  plan_gpu_tests tests/models/test_attention_kernels.py tests/backends/test_graphs.py tests/models/test_group_norm.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1; grep -q failed "$OUT/gpu-tests.log" && { log "stopped: a GPU test failed"; exit 1; }
  log attention-backends; $FG timeout ${ATTENTION_TIMEOUT:-300} $PY -m benchmarks.attention_backends \
    --out "$OUT/attention-backends.json" --size $SIZE --device $DEVICE ${ATTENTION_ARGS:-} > "$OUT/attention-backends.log" 2>&1
  echo "attention-backends rc=$?" >> "$OUT/attention-backends.log"
  grep -v Warning "$OUT/attention-backends.log" | grep "totals\|keyframes\|rc=" | cut -c1-900 | tail -n 4
  record_book
  for i in 1 2; do animate ${CLIP_FRAMES:-300} 10s-default-$i; done
  ;;
AI)  # twelfth session, after AH: the lean residual blocks; where the 3-keyframe step's time goes now
  compile_site
  upstream
  plan_gpu_tests tests/models/test_attention_kernels.py tests/backends/test_graphs.py tests/models/test_group_norm.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1; grep -q failed "$OUT/gpu-tests.log" && { log "stopped: a GPU test failed"; exit 1; }
  log step-variants; $FG timeout ${VARIANTS_TIMEOUT:-240} $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" \
    --device $DEVICE --size $SIZE --rounds 2 > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | grep -o "'[a-z ]*+graphs_ms': [0-9.]*" | tr '\n' ' '; echo
  log step-profile; $FG timeout 150 $PY -m benchmarks.step_profile --out "$OUT/step-profile.json" --size $SIZE \
    --device $DEVICE --keyframes 3 > "$OUT/step-profile.log" 2>&1; echo "step-profile rc=$?"
  record_book
  for i in 1 2; do animate ${CLIP_FRAMES:-300} 10s-default-$i; done
  ;;
AJ)  # twelfth session, last call: the channels-last norms' statistics in one reduction; conv1's bias in norm2
  compile_site
  upstream
  plan_gpu_tests tests/models/test_attention_kernels.py tests/models/test_group_norm.py tests/models/test_resnet.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1
  log step-variants; $FG timeout ${VARIANTS_TIMEOUT:-240} $PY -m benchmarks.step_variants --out "$OUT/step-variants.json" \
    --device $DEVICE --size $SIZE --rounds 2 > "$OUT/step-variants.log" 2>&1; grep -v Warning "$OUT/step-variants.log" | grep -o "'[a-z -]*+graphs_ms': [0-9.]*" | tr '\n' ' '; echo
  record_book
  for i in 1 2; do animate ${CLIP_FRAMES:-300} 10s-default-$i; done
  ;;
AK)  # twelfth session, last minutes: AJ's animate wrote nearly flat frames (fp16 statistics overflowed): fixed?
  compile_site
  plan_gpu_tests tests/models/test_group_norm.py tests/models/test_resnet.py tests/models/test_attention_kernels.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1
  record_book
  animate ${CLIP_FRAMES:-300} 10s-default-1
  upstream
  ;;
AL|AM)  # AL: what call AJ could not measure, two candidates for the channels-last statistics; AM: the same rows
        # after the statistics from fp32 sums and the joined shortcut biases (thirteenth session)
  compile_site
  upstream
  plan_gpu_tests tests/models/test_attention_kernels.py tests/models/test_group_norm.py tests/backends/test_graphs.py
  grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1
  VARIANTS_TIMEOUT=${VARIANTS_TIMEOUT:-300} step_variants_graphed
  record_book
  for i in 1 2; do animate ${CLIP_FRAMES:-300} 10s-default-$i; done
  ;;
AN|AO)  # thirteenth session: the compile backend's first compilation and warm start as a user runs them (issue 15
     # item 1: a second process on the same compile cache starts in <= 30 s). AN beside upstream's figure; AO: the
     # graphs GPU tests, the VAE in inductor's default mode (AN's max-autotune did not finish in 300 s), no upstream.
  # the command's own timeout (animate_command --timeout) ends a run that is too slow and still writes its record
  [ "$CALL" = AO ] || upstream
  [ "$CALL" = AO ] && { plan_gpu_tests tests/backends/test_graphs.py; grep -E "passed|failed" "$OUT/gpu-tests.log" | tail -n 1; }
  FIRST=${FIRST_TIMEOUT:-300}; WARM=${WARM_TIMEOUT:-110}; WARM_RUNS=${WARM_RUNS:-2}
  COMPILE=(--backend compile); [ "$CALL" = AO ] && COMPILE+=(--set runtime.compile_vae_mode=default)
  ANIMATE_TIMEOUT=$((FIRST + 30)) ANIMATE_ARGS="--timeout $FIRST" animate ${CLIP_FRAMES:-300} 10s-compile-first "${COMPILE[@]}"
  for i in $(seq 1 $WARM_RUNS); do  # a second warm run only where the call's 600 s leave room for it
    [ $i = 1 ] || [ $SECONDS -lt $((560 - WARM)) ] || break
    ANIMATE_TIMEOUT=$((WARM + 20)) ANIMATE_ARGS="--timeout $WARM" animate ${CLIP_FRAMES:-300} 10s-compile-warm-$i "${COMPILE[@]}"
  done
  ;;
AP)  # fourteenth session: the compile backend after the stream's inference mode (no mid-run recompilation), where
     # its first and warm starts spend their time (dynamo's compilations, cache counters, recompile reasons); then
     # the whole eager animate (a plan book recorded first), the versions read without imports
  FIRST=${FIRST_TIMEOUT:-260}; WARM=${WARM_TIMEOUT:-110}
  COMPILE=(--backend compile --set runtime.compile_vae_mode=default)
  TORCH_LOGS=recompiles ANIMATE_TIMEOUT=$((FIRST + 30)) \
    ANIMATE_ARGS="--timeout $FIRST --compile-stats $OUT/compile-stats-first.json" \
    animate ${CLIP_FRAMES:-300} 10s-compile-first "${COMPILE[@]}"
  TORCH_LOGS=recompiles ANIMATE_TIMEOUT=$((WARM + 20)) \
    ANIMATE_ARGS="--timeout $WARM --compile-stats $OUT/compile-stats-warm.json" \
    animate ${CLIP_FRAMES:-300} 10s-compile-warm "${COMPILE[@]}"
  [ $SECONDS -lt 480 ] && record_book
  [ $SECONDS -lt 530 ] && animate ${CLIP_FRAMES:-300} 10s-default-1
  ;;
AQ)  # fourteenth session: does --backend compile still beat the eager fast path (step alone, graphs, 0 / 3
     # keyframes, inductor default modes), and over the eager backend's channels-last decoder? Upstream first.
  upstream
  log compile-vs-eager
  ENGINE_SET=runtime.compile_vae_mode=default $FG timeout ${CVE_TIMEOUT:-420} $E compile-vs-eager \
    > "$OUT/compile-vs-eager.log" 2>&1; echo "compile-vs-eager rc=$?" >> "$OUT/compile-vs-eager.log"
  grep -o "'what': '[^']*', 'keyframes': [0-9]*\|'median_ms': [0-9.]*\|compile-vs-eager rc=.*" \
    "$OUT/compile-vs-eager.log" | tr '\n' ' '; echo
  ;;
AR)  # fourteenth session: why the compiled step, faster alone (AQ), was slower in the job (AP): the job body's loop
     # with GPU time by stage and its idle gaps attributed, eager against compile (default modes), 200 frames
  VARIANTS=${LOOP_VARIANTS:-runtime.backend=eager,runtime.backend=compile+runtime.compile_vae_mode=default}
  log "loop-profile ($VARIANTS)"; $FG timeout ${LOOP_TIMEOUT:-340} $PY -m benchmarks.loop_profile \
    --out "$OUT/loop-profile.json" --size $SIZE --device $DEVICE --frames ${LOOP_FRAMES:-24} \
    --timed-frames ${TIMED_FRAMES:-200} --variants "$VARIANTS" > "$OUT/loop-profile.log" 2>&1
  echo "loop-profile rc=$?" >> "$OUT/loop-profile.log"
  grep -v Warning "$OUT/loop-profile.log" | grep "loop_profile\|rc=" | cut -c1-600 | tail -n 4
  ;;
AS)  # fifteenth session: regional compilation (the UNet block by block) against the whole UNet, step alone with
     # graphs, each in its own process and empty compile cache; upstream first; the graphs GPU tests last
  upstream
  for scope in regional whole; do
    log "compile-vs-eager ($scope)"; EAGER=$([ $scope = regional ] && echo 1 || echo 0)
    ENGINE_TAG=$scope EAGER_ROWS=$EAGER PERSONALIVE_CACHE_DIR=/tmp/cc-$scope ENGINE_SET=runtime.compile_unet_scope=$scope \
      $FG timeout ${CVE_TIMEOUT:-230} $E compile-vs-eager > "$OUT/compile-$scope.log" 2>&1
    echo "compile-vs-eager $scope rc=$?" >> "$OUT/compile-$scope.log"
    grep -o "'what': '[^']*', 'keyframes': [0-9]*\|'median_ms': [0-9.]*\|'seconds': [0-9.]*\|rc=.*" \
      "$OUT/compile-$scope.log" | tr '\n' ' '; echo
  done
  [ $SECONDS -lt 500 ] && GPU_TESTS_TIMEOUT=$((580 - SECONDS)) plan_gpu_tests tests/backends/test_compiled.py
  ;;
AT)  # fifteenth session: the warm start of `animate --backend compile`, the UNet regional against whole, same call.
     # First runs of both scopes at once (cores 0-5, 6-11; their times not comparable), each with its own empty
     # compile cache and plan book, beside the GPU tests of the compiled step's graphs (cores 12-15); then a warm
     # run of each in a fresh process on all cores, with dynamo's statistics
  FIRST=${FIRST_TIMEOUT:-270}; WARM=${WARM_TIMEOUT:-100}; CORES=(0-5 6-11)
  ( TS=$([ -n "$FG" ] && echo "taskset -c 12-15"); GPU_TESTS_TIMEOUT=${GPU_TESTS_TIMEOUT:-260} \
    $TS bash -c "$(declare -f log plan_gpu_tests); OUT=$OUT FINAL=$FINAL PY=$PY plan_gpu_tests tests/backends/test_compiled.py tests/backends/test_graphs.py" ) &
  TESTS=$!
  for i in 0 1; do
    scope=$([ $i = 0 ] && echo regional || echo whole); rm -rf /tmp/cc-$scope
    FG=${FG:+"taskset -c ${CORES[$i]}"} PERSONALIVE_CACHE_DIR=/tmp/cc-$scope TORCH_LOGS=recompiles \
      ANIMATE_TIMEOUT=$((FIRST + 30)) ANIMATE_ARGS="--timeout $FIRST --compile-stats $OUT/compile-stats-$scope-first.json" \
      animate ${CLIP_FRAMES:-300} 10s-$scope-first --backend compile --set runtime.compile_unet_scope=$scope &
  done
  wait
  for scope in regional whole; do
    PERSONALIVE_CACHE_DIR=/tmp/cc-$scope ANIMATE_TIMEOUT=$((WARM + 20)) \
      ANIMATE_ARGS="--timeout $WARM --compile-stats $OUT/compile-stats-$scope-warm.json" \
      animate ${CLIP_FRAMES:-300} 10s-$scope-warm --backend compile --set runtime.compile_unet_scope=$scope
  done
  ;;
AU)  # fifteenth session: the GPU tests of the compiled step's graphs (both scopes) and of the graphs, alone
  GPU_TESTS_TIMEOUT=${GPU_TESTS_TIMEOUT:-300} plan_gpu_tests tests/backends/test_compiled.py tests/backends/test_graphs.py
  grep -v "^  \|warn" "$OUT/gpu-tests.log" | tail -n 40
  ;;
AV)  # sixteenth session: the compile command's slow windows (calls AP, AT) against its step and the job body (AR)
  export PERSONALIVE_CACHE_DIR=/tmp/cc-av; rm -rf "$PERSONALIVE_CACHE_DIR"
  FIRST=${FIRST_TIMEOUT:-240}; WARM=${WARM_TIMEOUT:-100}; N=${CLIP_FRAMES:-300}
  ANIMATE_TIMEOUT=$((FIRST + 30)) ANIMATE_ARGS="--timeout $FIRST" sampled first \
    animate ${FIRST_FRAMES:-24} compile-first --backend compile
  ANIMATE_TIMEOUT=$((WARM + 20)) ANIMATE_ARGS="--timeout $WARM" sampled warm-plain animate $N warm-plain --backend compile
  [ $SECONDS -lt 470 ] && ANIMATE_TIMEOUT=$((WARM + 20)) ANIMATE_ARGS="--timeout $WARM" \
    sampled warm-ultrafast animate $N warm-ultrafast --backend compile --set media.preset=ultrafast
  [ $SECONDS -lt 530 ] && sampled eager animate $N eager
  [ $SECONDS -lt 470 ] && ANIMATE_TIMEOUT=$((WARM + 20)) \
    ANIMATE_ARGS="--timeout $WARM --compile-stats $OUT/compile-stats-warm.json" \
    sampled warm-stats animate $N warm-stats --backend compile
  ;;
AW)  # sixteenth session: the window step precompiled (aot_compile), saved, then loaded in a fresh process
  for phase in save load; do
    log "aot precompile: $phase"
    $FG timeout ${AOT_TIMEOUT:-300} $PY -m benchmarks.aot_precompile_probe --weights $W --out $OUT --size $SIZE \
      --device $DEVICE --dtype ${DTYPE:-fp16} --phase $phase --artifact-dir /tmp/aot > "$OUT/aot-$phase.log" 2>&1
    echo "aot $phase rc=$?" >> "$OUT/aot-$phase.log"
    grep -v Warning "$OUT/aot-$phase.log" | grep "engine_gpu\|rc=\|Error" | cut -c1-400 | tail -n 8
  done
  [ $SECONDS -lt 430 ] && upstream
  ;;
AX)  # seventeenth session: the precompiled step (build-engine --format precompiled) and the warm start it gives
  ENG=/tmp/engines-ax; rm -rf "$ENG"; export PERSONALIVE_CACHE_DIR=/tmp/cc-ax; rm -rf "$PERSONALIVE_CACHE_DIR"
  log "build-engine --format precompiled"
  T0=$SECONDS; $FG timeout ${BUILD_TIMEOUT:-330} $PY -m personalive.cli build-engine --format precompiled \
    --weights $W --dtype ${DTYPE:-fp16} --device $DEVICE --set runtime.engine_dir=$ENG ${BUILD_ARGS:-} \
    > "$OUT/precompiled-build.log" 2>&1
  echo "build rc=$? wall_s=$((SECONDS - T0))" >> "$OUT/precompiled-build.log"; ls -l $ENG >> "$OUT/precompiled-build.log" 2>&1
  cp $ENG/*.json "$OUT/" 2>/dev/null
  grep -v Warning "$OUT/precompiled-build.log" | grep "precompiled\|rc=\|Error" | cut -c1-300
  ANIMATE_TIMEOUT=${WARM_TIMEOUT:-150} ANIMATE_ARGS="--timeout ${WARM_TIMEOUT:-150}" sampled precompiled \
    animate ${CLIP_FRAMES:-300} precompiled --backend compile --set runtime.engine_dir=$ENG --set media.preset=ultrafast
  [ $SECONDS -lt 400 ] && upstream
  if [ $SECONDS -lt 450 ]; then
    log "verify-engine"; timeout $((560 - SECONDS)) $PY -m personalive.cli verify-engine $ENG/*.ptstep --weights $W \
      --device $DEVICE --draws 2 > "$OUT/precompiled-verify.log" 2>&1; echo "verify rc=$?" >> "$OUT/precompiled-verify.log"
    grep -v Warning "$OUT/precompiled-verify.log" | tail -n 4 | cut -c1-300
  fi
  ;;
AY)  # eighteenth session: call AX again after the fix of its verify-engine refusal (dynamo's global-state guard,
     # num_threads): built on cores 0-7 as before, then verify-engine and a fresh animate on all 16 cores
  ENG=/tmp/engines-ay; rm -rf "$ENG"; export PERSONALIVE_CACHE_DIR=/tmp/cc-ay; rm -rf "$PERSONALIVE_CACHE_DIR"
  log "build-engine --format precompiled (cores 0-7)"
  T0=$SECONDS; $FG timeout ${BUILD_TIMEOUT:-300} $PY -m personalive.cli build-engine --format precompiled \
    --weights $W --dtype ${DTYPE:-fp16} --device $DEVICE --set runtime.engine_dir=$ENG > "$OUT/precompiled-build.log" 2>&1
  echo "build rc=$? wall_s=$((SECONDS - T0))" >> "$OUT/precompiled-build.log"
  grep -v Warning "$OUT/precompiled-build.log" | grep "precompiled\|rc=\|Error" | cut -c1-300
  log "verify-engine (all cores)"; T0=$SECONDS
  timeout ${VERIFY_TIMEOUT:-200} $PY -m personalive.cli verify-engine $ENG/*.ptstep --weights $W --device $DEVICE \
    --draws 2 > "$OUT/precompiled-verify.log" 2>&1; echo "verify rc=$? wall_s=$((SECONDS - T0))" >> "$OUT/precompiled-verify.log"
  grep -v Warning "$OUT/precompiled-verify.log" | tail -n 6 | cut -c1-300
  FG="" ANIMATE_TIMEOUT=${WARM_TIMEOUT:-150} ANIMATE_ARGS="--timeout ${WARM_TIMEOUT:-150}" sampled precompiled \
    animate ${CLIP_FRAMES:-300} precompiled-allcores --backend compile --set runtime.engine_dir=$ENG --set media.preset=ultrafast
  [ $SECONDS -lt 480 ] && upstream
  ;;
AZ)  # eighteenth session: the precompiled step with TAESD as the decoder (`model.decoder=taesd`), built and run by
     # the product's commands on all cores; upstream for the ratio
  ENG=/tmp/engines-az; rm -rf "$ENG"; export PERSONALIVE_CACHE_DIR=/tmp/cc-az; rm -rf "$PERSONALIVE_CACHE_DIR"
  TAESD="--set model.decoder=taesd --set runtime.engine_dir=$ENG"
  log "build-engine --format precompiled, TAESD"
  T0=$SECONDS; timeout ${BUILD_TIMEOUT:-300} $PY -m personalive.cli build-engine --format precompiled --weights $W \
    --dtype ${DTYPE:-fp16} --device $DEVICE $TAESD ${BUILD_ARGS:-} > "$OUT/precompiled-build.log" 2>&1
  echo "build rc=$? wall_s=$((SECONDS - T0))" >> "$OUT/precompiled-build.log"
  grep -v Warning "$OUT/precompiled-build.log" | grep "precompiled\|rc=\|Error\|error" | cut -c1-300
  FG="" ANIMATE_TIMEOUT=${WARM_TIMEOUT:-150} ANIMATE_ARGS="--timeout ${WARM_TIMEOUT:-150}" sampled taesd \
    animate ${CLIP_FRAMES:-300} precompiled-taesd --backend compile $TAESD --set media.preset=ultrafast
  [ $SECONDS -lt 420 ] && upstream
  if [ $SECONDS -lt 470 ]; then
    log "verify-engine, TAESD"; timeout $((570 - SECONDS)) $PY -m personalive.cli verify-engine $ENG/*.ptstep \
      --weights $W --device $DEVICE --draws 2 > "$OUT/precompiled-verify.log" 2>&1
    echo "verify rc=$?" >> "$OUT/precompiled-verify.log"; grep -v Warning "$OUT/precompiled-verify.log" | tail -n 3 | cut -c1-300
  fi
  ;;
BA)  # eighteenth session: verify-engine's comparison with the eager fp16 step in the artifact's place, per decoder
  log "decoder precision"; timeout ${PRECISION_TIMEOUT:-240} $PY -m benchmarks.decoder_precision --weights $W \
    --device $DEVICE --out "$OUT/decoder-precision.json" > "$OUT/decoder-precision.log" 2>&1
  echo "precision rc=$?"; grep -v Warning "$OUT/decoder-precision.log" | tail -n 2 | cut -c1-900
  ;;
BB|BC|BD)  # nineteenth session: the precompiled step without dynamo's ~31,000 guards on the module (TAESD in BB)
  ENG=/tmp/engines-$CALL; rm -rf "$ENG"; export PERSONALIVE_CACHE_DIR=/tmp/cc-$CALL; rm -rf "$PERSONALIVE_CACHE_DIR"
  SETS="--set runtime.engine_dir=$ENG"; [ "$CALL" = BB ] && SETS="$SETS --set model.decoder=taesd"
  [ "$CALL" = BD ] && compile_site && echo "compileall rc=$? at ${SECONDS}s"
  if [ "$CALL" != BC ]; then  # where the job's 6-13 s of imports go on this host: cold-ish, then warm
    for i in 1 2; do
      log "importtime $i"; T0=$EPOCHREALTIME
      $PY -X importtime -c "from personalive.backends import backend_class; from personalive.environment import \
torch_dtype; from personalive.pipeline.animate import Animator; from personalive.weights import load_models; \
backend_class('compile'); import torch; torch.cuda.init()" 2> "$OUT/importtime-$i.txt"
      awk "BEGIN { print \"imports $i: \" $EPOCHREALTIME - $T0 \" s\" }"; sort -t'|' -k2 -n "$OUT/importtime-$i.txt" | tail -n 4
    done
  fi
  log "build-engine --format precompiled ($CALL)"
  T0=$SECONDS; timeout ${BUILD_TIMEOUT:-300} $PY -m personalive.cli build-engine --format precompiled --weights $W \
    --dtype ${DTYPE:-fp16} --device $DEVICE $SETS > "$OUT/precompiled-build.log" 2>&1
  echo "build rc=$? wall_s=$((SECONDS - T0))" >> "$OUT/precompiled-build.log"; ls -l $ENG >> "$OUT/precompiled-build.log"
  grep -v Warning "$OUT/precompiled-build.log" | grep "precompiled\|rc=\|Error\|error" | cut -c1-300
  verify() {
    log "verify-engine ($CALL)"; T0=$SECONDS; timeout ${VERIFY_TIMEOUT:-150} $PY -m personalive.cli verify-engine \
      $ENG/*.ptstep --weights $W --device $DEVICE --draws 2 > "$OUT/precompiled-verify.log" 2>&1
    echo "verify rc=$? wall_s=$((SECONDS - T0))" >> "$OUT/precompiled-verify.log"
    grep -v Warning "$OUT/precompiled-verify.log" | tail -n 6 | cut -c1-400
  }
  [ "$CALL" = BB ] && verify
  FG="" ANIMATE_TIMEOUT=${WARM_TIMEOUT:-120} ANIMATE_ARGS="--timeout ${WARM_TIMEOUT:-120}" sampled $CALL \
    animate ${CLIP_FRAMES:-300} precompiled-$CALL --backend compile $SETS --set media.preset=ultrafast
  [ "$CALL" = BD ] && FG="" ANIMATE_TIMEOUT=${WARM_TIMEOUT:-120} ANIMATE_ARGS="--timeout ${WARM_TIMEOUT:-120}" \
    animate ${CLIP_FRAMES:-300} precompiled-$CALL-2 --backend compile $SETS --set media.preset=ultrafast
  [ "$CALL" = BC ] && verify
  [ $SECONDS -lt 490 ] && upstream
  ;;
M)
  log "onnx export + verify, fp32, reference without TF32"
  timeout ${ONNX_TIMEOUT:-500} $PY -m benchmarks.engine_gpu --weights $W --out $OUT --size $SIZE --device $DEVICE \
    --dtype fp32 onnx-verify > "$OUT/onnx.log" 2>&1; echo "onnx rc=$?" >> "$OUT/onnx.log"
  grep -v Warning "$OUT/onnx.log" | grep -v "^ " | tail -n 12
  ;;
J)  # fourth session: the full-size ONNX verified on onnxruntime's CPU provider (issue 15 item 5, cores 0-11);
    # the VAE decode alone, eager / default / max-autotune, beside it on cores 12-15 (GPU-bound: CUDA events)
  log "vae (background, cores 12-15)"
  (${FG:+taskset -c 12-15} timeout ${VAE_TIMEOUT:-420} $E vae > "$OUT/vae.log" 2>&1; echo "vae rc=$?" >> "$OUT/vae.log") &
  VAE=$!
  log "onnx export + verify"; ONNX_TASKSET=${FG:+taskset -c 0-11}
  $ONNX_TASKSET timeout ${ONNX_TIMEOUT:-500} $E onnx-verify > "$OUT/onnx.log" 2>&1; echo "onnx rc=$?" >> "$OUT/onnx.log"
  grep -v Warning "$OUT/onnx.log" | tail -n 12
  log "waiting for vae"; wait $VAE; grep -v Warning "$OUT/vae.log" | tail -n 5
  ;;
esac
log done
