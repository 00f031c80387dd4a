"""Lower precision for the window step (issue 15 item 4, an optional measured experiment, off by default).

    python -m benchmarks.precision_gpu --weights DIR --out FILE.json [--size full|tiny] [--device cuda|cpu]
        [--repeat 15] [--warmup 3]

Rows (each: median ms per window step, fps = window frames / step, peak GPU memory, and the deviation of the
step's outputs from the fp16 eager step's on the same inputs: max and mean |difference| of the [0, 1] frames,
max|difference| / max|reference| and the L2 ratio of the clean latents):

* ``fp16 eager``: the baseline; its deviation is measured against an fp32 eager step (the scale of ordinary
  rounding), since against itself it is zero.
* ``bf16 eager``: the same weights and inputs cast to bfloat16.
* ``fp16 + fp8 linears (per-tensor)`` / ``(rowwise)``: the denoising UNet's ``nn.Linear`` layers replaced by
  :class:`Fp8Linear` (weights quantised once to float8 e4m3, activations quantised in every call, then
  ``torch._scaled_mm``); per-tensor scales, or one scale per activation row and weight output channel.
  Layers whose sizes ``_scaled_mm`` refuses (not multiples of 16) stay fp16 and are counted.
* the same fp8 steps replayed from CUDA graphs (on CUDA only; the quantisation adds small kernels that the host
  would otherwise launch one by one).

The plain fp16 step replayed from CUDA graphs is timed too, so that fp8 + graphs is set against fp16 + graphs.
On a CPU (smoke tests) the baseline is fp32 measured against fp64, as fp16 convolutions there are scalar
fallbacks, and ``--size tiny`` runs windows of 2 frames with 2 noise levels. The reference UNet is not part of
the window step (its features are inputs), so only the denoising UNet is converted. Where fp8 matmuls are
unavailable the row says ``skipped`` with the reason. ``--weights DIR`` is read if it holds a layout, otherwise
random weights of ``--size`` are written there first (official layout; fp16 on CUDA).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.engine_gpu import facts, sync, timed

log = logging.getLogger("benchmarks.precision_gpu")

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
EPS = 1e-12  # amax floor: an all-zero tensor gets a tiny scale instead of a division by zero


# ------------------------------------------------------------------------------------------------------ fp8
def quantise_e4m3(x: torch.Tensor, rowwise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (..., K) -> (``q`` float8 e4m3, ``scale`` float32) with ``x ~= q.float() * scale``.

    The scale maps the largest magnitude to e4m3's largest finite value (448): one scalar for the tensor, or with
    ``rowwise`` one per row (shape (..., 1), the amax over the last axis).
    """
    x32 = x.float()
    amax = x32.abs().amax(dim=-1, keepdim=True) if rowwise else x32.abs().amax()
    scale = amax.clamp_min(EPS) / E4M3_MAX
    q = (x32 / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale


def dequantise(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def fits_scaled_mm(linear: nn.Linear) -> bool:
    """``_scaled_mm`` needs the inner (in) and outer (out) sizes to be multiples of 16; the row count is free."""
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


class Fp8Linear(nn.Module):
    """An ``nn.Linear`` whose matmul runs in float8 e4m3 through ``torch._scaled_mm``.

    The weight is quantised once (per tensor, or with ``rowwise`` per output channel); each call quantises the
    activation with a dynamic scale from its amax (per tensor, or per row), multiplies in fp8 with fp32
    accumulation and writes the input's dtype, bias added by the kernel. ``_scaled_mm`` wants its second operand
    column-major: the (out, in) row-major weight, transposed, is exactly that.
    """

    def __init__(self, linear: nn.Linear, rowwise: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rowwise = linear.in_features, linear.out_features, rowwise
        weight, scale = quantise_e4m3(linear.weight.detach(), rowwise)
        self.register_buffer("weight_fp8", weight.contiguous())
        # per channel: (out, 1) -> (1, out), the shape _scaled_mm expects for the second operand's scales
        self.register_buffer("weight_scale", scale.reshape(1, -1) if rowwise else scale)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        a, a_scale = quantise_e4m3(rows, self.rowwise)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y = torch._scaled_mm(
            a.contiguous(),
            self.weight_fp8.t(),
            scale_a=a_scale,
            scale_b=self.weight_scale,
            bias=bias,
            out_dtype=x.dtype,
        )
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rowwise={self.rowwise}"


def swap_linears(root: nn.Module, rowwise: bool) -> tuple[list[tuple[nn.Module, str, nn.Module]], int]:
    """Replace every fitting ``nn.Linear`` under ``root`` by an :class:`Fp8Linear`.

    Returns (the replaced (parent, name, original) triples, for :func:`restore_linears`; the number left as is).
    """
    swapped, left = [], 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if type(child) is not nn.Linear or not fits_scaled_mm(child):  # subclasses may take extra arguments
                left += 1
                continue
            setattr(parent, name, Fp8Linear(child, rowwise))
            swapped.append((parent, name, child))
    return swapped, left


def restore_linears(swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for parent, name, original in swapped:
        setattr(parent, name, original)


def fp8_unavailable(device: torch.device, dtype: torch.dtype, rowwise: bool) -> str | None:
    """Why ``_scaled_mm`` cannot run an fp8 linear here (None if a 16x32 -> 16 probe with bias runs)."""
    if not hasattr(torch, "_scaled_mm"):
        return f"torch {torch.__version__} has no torch._scaled_mm"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        return f"fp8 matmuls need compute capability 8.9+, this GPU is {torch.cuda.get_device_capability(device)}"
    try:
        g = torch.Generator(device).manual_seed(0)
        linear = nn.Linear(32, 16).to(device=device, dtype=dtype)
        x = torch.randn(16, 32, generator=g, device=device).to(dtype)
        Fp8Linear(linear, rowwise)(x)
        sync()
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        return (
            f"torch._scaled_mm on {device.type} ({dtype}, {'rowwise' if rowwise else 'per-tensor'}): "
            + str(exc).splitlines()[0]
        )
    return None


# ------------------------------------------------------------------------------------------------------ rows
def deviation(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """Frames ([0, 1]): max and mean |out - ref|; clean latents: max|d| / max|ref| and ||d|| / ||ref||."""
    frames = (out["frames"].float().cpu() - ref["frames"].float().cpu()).abs()
    clean, clean_ref = out["clean_latents"].float().cpu(), ref["clean_latents"].float().cpu()
    diff = clean - clean_ref
    return {
        "frames_max_abs": float(frames.max()),
        "frames_mean_abs": float(frames.mean()),
        "clean_max_rel": float(diff.abs().max() / clean_ref.abs().max().clamp_min(EPS)),
        "clean_rel_l2": float(diff.norm() / clean_ref.norm().clamp_min(EPS)),
    }


def measure(
    step, inputs: dict[str, torch.Tensor], device: torch.device, args: argparse.Namespace, once: bool = False
) -> dict:
    """The first call's outputs (kept on the host) and the step's timing: CUDA-event medians after warm-up
    (``once``: the first call's host time alone, for rows too slow to repeat in a CPU smoke test)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    outputs = {k: v.detach().cpu() for k, v in step(inputs).items()}
    first = time.perf_counter() - t0
    if once:
        stats = {"median_ms": round(1000 * first, 2), "min_ms": round(1000 * first, 2), "iters": 1}
    else:
        stats = timed(lambda: step(inputs), warmup=args.warmup, iters=args.repeat)
    peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
    frames = int(outputs["frames"].shape[1])
    row = {"first_call_s": round(first, 2), **stats, "fps": round(1000 * frames / stats["median_ms"], 1)}
    return {"outputs": outputs, "row": {**row, "peak_gpu_gib": peak}}


class Bench:
    """The run: config, one set of inputs (drawn once in the baseline dtype, cast per dtype), rows as they come."""

    def __init__(self, args: argparse.Namespace) -> None:
        from personalive.config import load_config

        self.args, self.device = args, torch.device(args.device)
        # fp16 (bf16) convolutions on a CPU are scalar fallbacks (tiny step: 12 s vs 0.34 s in fp32): there the
        # baseline is fp32 and its rounding is measured against fp64
        cuda = self.device.type == "cuda"
        self.base, self.exact = (torch.float16, torch.float32) if cuda else (torch.float32, torch.float64)
        options = {
            "model.weights_dir": str(args.weights),
            "runtime.device": args.device,
            "runtime.cuda_graphs": "off",
            "generation.height": 512 if args.size == "full" else 64,
            "generation.width": 512 if args.size == "full" else 64,
        }
        if args.size == "tiny":  # windows of 2 frames, 2 noise levels: the same code paths, a fraction of the time
            options |= {"generation.window": 2, "generation.adaptive_steps": 2, "generation.inference_steps": 2}
        self.config = load_config(None, [], options)
        self.results: dict[str, Any] = {"facts": facts(self.device), "args": vars(args), "rows": []}
        self.drawn: dict[str, torch.Tensor] | None = None
        self.reference: dict[str, torch.Tensor] | None = None  # the baseline eager step's outputs

    def record(self, row: dict) -> None:
        log.info("%s", json.dumps(row, default=str))
        self.results["rows"].append(row)
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(json.dumps(self.results, indent=1, default=str) + "\n")

    def models(self, dtype: torch.dtype):
        from personalive.pipeline.window import WINDOW_STEP_NETWORKS
        from personalive.weights import load_models

        t0 = time.perf_counter()
        models = load_models(self.args.weights, dtype, self.device, networks=WINDOW_STEP_NETWORKS)
        sync()
        log.info("loaded the step's networks in %s in %.1f s", dtype, time.perf_counter() - t0)
        return models

    def step(self, models, graphs: bool = False):
        from personalive.backends.eager import EagerWindowStep
        from personalive.pipeline.window import build_window_module

        return EagerWindowStep(build_window_module(models, self.config), cuda_graphs=graphs)

    def inputs(self, models, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        from personalive.pipeline.window import example_window_inputs

        if self.drawn is None:  # 0 keyframes; one draw in the baseline dtype, cast for every row
            g = torch.Generator(self.device).manual_seed(0)
            self.drawn = example_window_inputs(models, self.config, self.device, self.base, 0, g)
        return {k: v.to(dtype) for k, v in self.drawn.items()}

    def run_row(
        self, name: str, models, dtype: torch.dtype, *, graphs: bool = False, once: bool = False, **extra
    ) -> dict:
        step = self.step(models, graphs)
        result = measure(step, self.inputs(models, dtype), self.device, self.args, once)
        if graphs:
            extra["graphs_captured"] = len(step.graphed.graphs) if step.graphed else 0
        row = {"name": name, "dtype": short(dtype), "keyframes": 0, **result["row"], **extra}
        if self.reference is not None:
            row[f"deviation_from_{short(self.base)}"] = deviation(result["outputs"], self.reference)
        self.record(row)
        return result["outputs"]


def ensure_weights(args: argparse.Namespace) -> None:
    """Random weights of ``--size`` in the official layout, unless ``--weights`` already holds a layout."""
    from personalive.random_weights import random_models, save_layout

    if (args.weights / "personalive" / "denoising_unet.pth").is_file():
        return
    t0 = time.perf_counter()
    device = torch.device(args.device)
    save_layout(
        random_models(args.size, device, torch.float16 if device.type == "cuda" else torch.float32), args.weights
    )
    log.info("wrote %s random weights to %s in %.1f s", args.size, args.weights, time.perf_counter() - t0)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def short(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}[dtype]


def baseline_row(bench: Bench, models) -> None:
    """The baseline eager step, timed; its deviation from the same step one precision up (fp16 vs fp32)."""
    measured = measure(bench.step(models), bench.inputs(models, bench.base), bench.device, bench.args)
    exact_models = bench.models(bench.exact)
    exact = bench.step(exact_models)(bench.inputs(exact_models, bench.exact))
    name = f"{short(bench.base)} eager"
    row = {"name": name, "dtype": short(bench.base), "keyframes": 0, **measured["row"]}
    bench.record(row | {f"deviation_from_{short(bench.exact)}": deviation(measured["outputs"], exact)})
    del exact_models, exact
    free(bench.device)
    bench.reference = measured["outputs"]
    if bench.device.type == "cuda":
        bench.run_row(f"{name} + CUDA graphs", models, bench.base, graphs=True)


def fp8_rows(bench: Bench, models) -> None:
    """The baseline step with the denoising UNet's linears in fp8 (per-tensor, then rowwise), eager and (CUDA)
    replayed from CUDA graphs."""
    for rowwise in (False, True):
        label = f"{short(bench.base)} + fp8 linears ({'rowwise' if rowwise else 'per-tensor'})"
        reason = fp8_unavailable(bench.device, bench.base, rowwise)
        if reason:
            bench.record({"name": label, "skipped": reason})
            continue
        swapped, left = swap_linears(models.denoising_unet, rowwise)
        counts = {
            "linears_fp8": len(swapped),
            "linears_left": left,
            # the originals stay loaded for the restore, so peak_gpu_gib holds both; these say what fp8 would save
            "converted_weights_gib": round(sum(o.weight.nbytes for _, _, o in swapped) / 2**30, 3),
            "fp8_weights_gib": round(sum(o.weight.numel() for _, _, o in swapped) / 2**30, 3),
        }
        try:
            bench.run_row(label, models, bench.base, **counts)
            if bench.device.type == "cuda":
                bench.run_row(label + " + CUDA graphs", models, bench.base, graphs=True, **counts)
        except (RuntimeError, ValueError) as exc:  # a layer shape the probe did not cover: record, go on
            bench.record({"name": label, "skipped": f"failed in the step: {str(exc).splitlines()[0]}", **counts})
        finally:
            restore_linears(swapped)
            free(bench.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    if args.device.startswith("cuda"):
        from personalive.config import RuntimeConfig

        torch.backends.cudnn.benchmark = RuntimeConfig().cudnn_benchmark  # as the product runs
    ensure_weights(args)
    bench = Bench(args)
    models = bench.models(bench.base)
    baseline_row(bench, models)
    fp8_rows(bench, models)  # on the baseline networks, restored afterwards
    del models
    free(bench.device)
    bf16_models = bench.models(torch.bfloat16)
    # bf16 convolutions on a CPU are scalar fallbacks (tiny: 11-50 s a call on 2 loaded cores): one call there
    cpu = bench.device.type == "cpu"
    bench.run_row("bf16 eager", bf16_models, torch.bfloat16, once=cpu, **({"timing": "one call"} if cpu else {}))
    del bf16_models
    free(bench.device)
    bench.results["total_s"] = round(time.perf_counter() - started, 1)
    bench.args.out.write_text(json.dumps(bench.results, indent=1, default=str) + "\n")
    summary = ", ".join(f"{r['name']}: {r.get('median_ms', 'skipped')} ms" for r in bench.results["rows"])
    print(f"wrote {args.out} in {bench.results['total_s']} s: {summary}")


if __name__ == "__main__":
    main()
