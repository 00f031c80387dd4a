"""The engine commands' bodies: ``build-engine``, ``verify-engine`` and ``bench`` (registered in :mod:`.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personalive.cli_options import (
    BackendOpt,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    SetOpt,
    WeightsOpt,
    make_config,
)


def build_engine(
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Engine path (default: engines/<derived name>.engine or .pt2).")
    ] = None,
    height: Annotated[int | None, typer.Option("--height", help="Output height (default: config, 512).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Output width (default: config, 512).")] = None,
    max_keyframes: Annotated[
        int | None, typer.Option("--max-keyframes", help="History keyframes the engine takes.")
    ] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="fp16 (default), bf16 or fp32.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", hidden=True, help="Old name of --dtype.")] = None,
    onnx_only: Annotated[
        bool, typer.Option("--onnx-only", help="Stop after exporting and checking the ONNX graph.")
    ] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Run verify-engine on the result.")] = False,
    device: DeviceOpt = None,
    engine_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="tensorrt (ONNX export + TensorRT; the default where TensorRT is installed), aoti "
            "(an AOTInductor package, the default elsewhere), compile-cache (inductor's compiled code for "
            "--backend compile) or precompiled (the whole step compiled ahead of time: --backend compile starts "
            "without tracing).",
        ),
    ] = None,
) -> None:
    """Compile the per-window denoising step into an engine: TensorRT (via ONNX) or AOTInductor."""
    from personalive import engines

    options = {
        "model.weights_dir": weights,
        "generation.height": height,
        "generation.width": width,
        "model.dtype": dtype or precision or "fp16",
        "runtime.device": device,
    }
    cfg = make_config(config, set_, options)
    engines.build_engine(
        cfg,
        out=out,
        max_keyframes=max_keyframes,
        onnx_only=onnx_only,
        verify=verify,
        config_file=config,
        engine_format=engine_format,
    )


def verify_engine(
    path: Annotated[
        Path,
        typer.Argument(
            help="A .engine (TensorRT), .onnx (onnxruntime), .pt2 (AOTInductor), .ptcache (compile cache) or "
            ".ptstep (precompiled step)."
        ),
    ],
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="Relative error allowed per output.")] = None,
    draws: Annotated[int, typer.Option("--draws", help="Random input draws to compare.")] = 3,
) -> None:
    """Run an engine or ONNX graph and the PyTorch step on the same random inputs and compare every output."""
    from personalive import engines
    from personalive.backends.artifacts import artifact_options, read_artifact_sidecar

    meta = read_artifact_sidecar(path)
    options = {**artifact_options(meta), "model.weights_dir": weights, "runtime.device": device}
    cfg = make_config(config, set_, options)
    engines.verify_engine(cfg, path, meta, tolerance=tolerance, draws=draws)


def bench(
    weights: WeightsOpt = None,
    random: Annotated[
        str | None, typer.Option("--random", help="full or tiny: random weights built in memory instead of --weights.")
    ] = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    frames: Annotated[
        int, typer.Option("--frames", help="Synthetic device frames for the stream run (0: skip).")
    ] = 48,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing.")] = 3,
    iters: Annotated[int, typer.Option("--iters", help="Timed window-step calls (medians reported).")] = 10,
    keyframes: Annotated[str, typer.Option("--keyframes", help="History-keyframe counts for the step.")] = "0,3",
    video_frames: Annotated[
        int, typer.Option("--video-frames", help="Frames of a generated 29.97 fps clip run through PyAV (0: skip).")
    ] = 0,
    video_size: Annotated[str, typer.Option("--video-size", help="WIDTHxHEIGHT of that clip.")] = "640x480",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here (default: stdout).")] = None,
    graphs: Annotated[
        str, typer.Option("--graphs", help="CUDA graphs: on, off, or auto (on for every backend on a GPU).")
    ] = "auto",
) -> None:
    """Measure loading, the window step, the stream and a real decode/animate/encode run; print JSON."""
    import json

    from personalive.bench import BenchOptions, run_bench

    if weights is None and random is None:
        random = "tiny"  # nothing to load: the quickest meaningful run
    counts = tuple(int(k) for k in keyframes.split(",") if k.strip())
    options = BenchOptions(
        weights=weights,
        random=random,
        backend=backend or "eager",
        dtype=dtype or "auto",
        device=device,
        frames=frames,
        warmup=warmup,
        iters=iters,
        keyframes=counts,
        video_frames=video_frames,
        video_size=tuple(int(v) for v in video_size.lower().split("x")),
        cuda_graphs=graphs,
    )
    text = json.dumps(run_bench(options), indent=2, default=str)
    if json_out is None:
        typer.echo(text)
    else:
        json_out.write_text(text + "\n")
