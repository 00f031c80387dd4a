#!/usr/bin/env bash
# `make demo`: animate examples/reference.png with the motion of examples/driving.mp4 -> outputs/demo.mp4.
#
# With PERSONALIVE_WEIGHTS pointing at the official weights: the real animation at the default 512x512.
# Without it: tiny random weights, written once into .cache/demo-weights (git-ignored), run on CPU at 128x128.
# That checks the whole installation end to end in under two minutes on 2 idle cores; the picture is meaningless.
#
# Environment: PERSONALIVE (the command, default .venv/bin/personalive), DEMO_OUT (default outputs/demo.mp4),
# DEMO_WEIGHTS (where the random weights are cached, default .cache/demo-weights), DEMO_FRAMES (random weights:
# driving frames to animate, default 75 = the whole clip),
# DEMO_ARGS (extra arguments for `personalive animate`, e.g. "--device cuda --dtype fp16").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

personalive="${PERSONALIVE:-.venv/bin/personalive}"
out="${DEMO_OUT:-outputs/demo.mp4}"
if [[ ! -x "$personalive" ]] && ! command -v "$personalive" >/dev/null 2>&1; then
    echo "demo: $personalive not found; run \`make install\` first (or set PERSONALIVE=<path to personalive>)" >&2
    exit 2
fi

say() { printf '%s\n' "$*" >&2; }
mkdir -p "$(dirname "$out")"

if [[ -n "${PERSONALIVE_WEIGHTS:-}" ]]; then
    say "demo: real weights from PERSONALIVE_WEIGHTS=$PERSONALIVE_WEIGHTS, 512x512"
    # shellcheck disable=SC2086  # DEMO_ARGS is a list of words on purpose
    "$personalive" animate --ref examples/reference.png --drive examples/driving.mp4 -o "$out" \
        --weights "$PERSONALIVE_WEIGHTS" --overwrite ${DEMO_ARGS:-}
    say "demo: wrote $out"
    exit 0
fi

weights="${DEMO_WEIGHTS:-.cache/demo-weights}"
# Written once; the marker file says init-random finished, so an interrupted write is redone.
if [[ ! -f "$weights/.demo-complete" ]]; then
    say "demo: writing tiny random weights into $weights (once)"
    rm -rf "$weights"
    "$personalive" weights init-random "$weights" --size tiny --seed 0
    touch "$weights/.demo-complete"
fi

banner="demo: RANDOM TINY WEIGHTS: the output only shows that the installation works; its picture is meaningless."
say ""
say "$banner"
say "demo: for a real animation: .venv/bin/personalive weights download ./pretrained_weights"
say "demo:                       PERSONALIVE_WEIGHTS=./pretrained_weights make demo"
say ""

# Tiny weights: 128x128 images (16x16 latents), the size the tiny layout is built for. On CPU the
# whole clip (75 frames, DEMO_FRAMES) took 22 s on 2 idle cores, well under two minutes; the
# full-size motion encoder, kept in the tiny layout, costs about half of the time.
# shellcheck disable=SC2086
"$personalive" animate --ref examples/reference.png --drive examples/driving.mp4 -o "$out" \
    --weights "$weights" --device cpu --dtype fp32 --overwrite --max-frames "${DEMO_FRAMES:-75}" \
    --set generation.height=128 --set generation.width=128 ${DEMO_ARGS:-}

say ""
say "demo: wrote $out"
say "$banner"
say "demo: real output: personalive weights download, then PERSONALIVE_WEIGHTS=<that folder> make demo"
