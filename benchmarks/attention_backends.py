"""Every scaled-dot-product attention call of the eager step, timed under each of PyTorch's SDPA backends, and the
whole step with each backend preferred.

    python -m benchmarks.attention_backends --out FILE.json [--size full|tiny] [--device cuda|cpu]

Why: at 3 history keyframes the reference attention's keys are 5x the frame's tokens (4096 -> 20480 at 64x64
latents) and the step's attention kernels take ~37 ms of ~168 (the eleventh session). On the H200 PyTorch picks
cuDNN's attention (64-query tiles at head size 40), which streams every key and value once per 64 queries; a
kernel with other tiles (FlashAttention-2's, the memory-efficient one) may stream less. The functions are the same
up to fp16 rounding; only the kernels differ.

1. One step call (3 keyframes: the longest keys) is run under a function mode that records every SDPA call's
   query/key/value shapes, strides and dtype; identical calls are counted once.
2. Each distinct call is rebuilt with the same strides and timed under every backend that accepts it (CUDA-event
   medians after a warm-up), with its deviation from an fp32 computation (the memory-efficient kernel in fp32 on
   CUDA: the math backend would materialise scores of up to 21 GB); the math backend only where its scores are
   small.
3. The whole step (0 and 3 keyframes), with CUDA graphs on CUDA: the product (``default``: the eager kernels of
   :mod:`personalive.models.attention_kernels`), and with those off (``kernels off``: every attention through SDPA,
   the reference tokens joined per frame, as before the twelfth session) under ``sdpa_kernel`` with each backend
   put first (the others after it, so that a call it refuses falls back as PyTorch would) and with each call routed
   to its fastest backend from step 2 (``routed``); the deviation of each variant's outputs from the product's.

Steps 1-2 record the calls with the eager kernels off (the joined reference attention, as SDPA sees it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from benchmarks.step_variants import cast, deviation, deviations, kernels_off, timed_ms

log = logging.getLogger("benchmarks.attention_backends")

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
_MATH_SCORES_LIMIT = 2 * 2**30  # bytes of a (N, heads, Lq, Lk) score matrix the math backend may allocate


@dataclass(frozen=True)
class Call:
    """One SDPA call's tensors (shape, strides) and options, enough to rebuild it."""

    q: tuple[tuple[int, ...], tuple[int, ...]]
    k: tuple[tuple[int, ...], tuple[int, ...]]
    v: tuple[tuple[int, ...], tuple[int, ...]]
    dtype: str
    scale: float | None

    @classmethod
    def of(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> Call:
        dtype = str(q.dtype).removeprefix("torch.")
        return cls(
            (tuple(q.shape), q.stride()), (tuple(k.shape), k.stride()), (tuple(v.shape), v.stride()), dtype, scale
        )

    def tensors(self, device: torch.device, generator: torch.Generator) -> list[torch.Tensor]:
        dtype = getattr(torch, self.dtype)
        out = []
        for shape, stride in (self.q, self.k, self.v):
            t = torch.empty_strided(shape, stride, device=device, dtype=dtype)
            t.copy_(torch.randn(shape, generator=generator, device=device, dtype=torch.float32))
            out.append(t)
        return out

    def scores_bytes(self) -> int:
        n, heads, lq, _ = self.q[0]
        return n * heads * lq * self.k[0][2] * torch.finfo(getattr(torch, self.dtype)).bits // 8


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[Call, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            options = dict(zip(("attn_mask", "dropout_p", "is_causal"), args[3:], strict=False)) | kwargs
            plain = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False}
            if any(options.get(key, value) != value for key, value in plain.items()) or set(options) - {
                *plain,
                "scale",
            }:
                raise RuntimeError(f"the step's attention takes options this benchmark does not rebuild: {options}")
            call = Call.of(q, k, v, options.get("scale"))
            self.calls[call] = self.calls.get(call, 0) + 1
        return func(*args, **kwargs)


def record_calls(step, inputs: dict) -> dict[Call, int]:
    recorder = _Recorder()
    with torch.inference_mode(), recorder:
        step(inputs)
    return recorder.calls


def time_call(call: Call, device: torch.device, iters: int) -> dict:
    """Each backend's median ms and deviation from fp32 for one call; None where the backend refuses it."""
    generator = torch.Generator(device).manual_seed(0)
    q, k, v = call.tensors(device, generator)
    exact_backend = [SDPBackend.EFFICIENT_ATTENTION] if device.type == "cuda" else [SDPBackend.MATH]
    with torch.inference_mode():
        with sdpa_kernel(exact_backend):
            exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=call.scale)
        row: dict = {}
        default = F.scaled_dot_product_attention(q, k, v, scale=call.scale)
        row["default_ms"] = statistics.median(
            timed_ms(lambda: F.scaled_dot_product_attention(q, k, v, scale=call.scale), device, iters)
        )
        row["default_deviation"] = deviation(default.float(), exact)
        for name, backend in BACKENDS.items():
            if name == "math" and device.type == "cuda" and call.scores_bytes() > _MATH_SCORES_LIMIT:
                row[f"{name}_ms"] = None
                row[f"{name}_skipped"] = f"scores of {call.scores_bytes() / 2**30:.1f} GiB"
                continue
            try:
                with sdpa_kernel([backend]):
                    out = F.scaled_dot_product_attention(q, k, v, scale=call.scale)
                    times = timed_ms(lambda: F.scaled_dot_product_attention(q, k, v, scale=call.scale), device, iters)  # noqa: B023
            except RuntimeError as error:
                row[f"{name}_ms"] = None
                row[f"{name}_refused"] = str(error).splitlines()[0][:160]
                continue
            row[f"{name}_ms"] = round(statistics.median(times), 4)
            row[f"{name}_deviation"] = deviation(out.float(), exact)
    return row


def fastest(row: dict) -> str:
    timed = {n: row[f"{n}_ms"] for n in BACKENDS if row.get(f"{n}_ms") is not None}
    return min(timed, key=timed.get)


@contextlib.contextmanager
def routed(choice: dict[Call, str]):
    """Each recorded call to the backend ``choice`` names (the SDPA function patched for the block)."""
    original = F.scaled_dot_product_attention

    def route(q, k, v, *args, **kwargs):
        name = choice.get(Call.of(q, k, v, kwargs.get("scale")))
        if name is None:
            return original(q, k, v, *args, **kwargs)
        with sdpa_kernel([BACKENDS[name]]):
            return original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = route
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def first(name: str):
    order = [BACKENDS[name]] + [b for n, b in BACKENDS.items() if n != name]
    return sdpa_kernel(order, set_priority=True)


@contextlib.contextmanager
def _both(outer, inner):
    with outer, inner:
        yield


def step_rows(module, make_inputs, device, dtype, choice: dict[Call, str], rounds: int, iters: int) -> list[dict]:
    from personalive.backends.eager import EagerWindowStep
    from personalive.backends.graphs import CAPTURE_AFTER

    variants = {"default": contextlib.nullcontext, "kernels off": kernels_off}
    variants |= {f"{n} first": (lambda n=n: _both(kernels_off(), first(n))) for n in BACKENDS if n != "math"}
    variants["routed"] = lambda: _both(kernels_off(), routed(choice))
    rows = []
    graphs = device.type == "cuda"
    for keyframes in (0, 3):
        inputs = cast(make_inputs(keyframes, torch.Generator(device).manual_seed(keyframes)), dtype)
        row: dict = {"keyframes": keyframes}
        plain = EagerWindowStep(module)
        with torch.inference_mode():
            reference = plain(inputs)
            steps = {}
            for name, context in variants.items():
                with context():
                    try:
                        row |= deviations(f"deviation_{name.replace(' ', '_')}", plain(inputs), reference)
                    except RuntimeError as error:
                        row[f"{name}_refused"] = str(error).splitlines()[0][:160]
                        continue
                    step = EagerWindowStep(module, cuda_graphs=graphs)
                    for _ in range(CAPTURE_AFTER if graphs else 1):
                        step(inputs)
                    steps[name] = step
            times: dict[str, list[float]] = {}
            for _ in range(rounds):
                for name, step in steps.items():
                    with variants[name]():  # the plain (uncaptured) case needs the context at every call
                        times.setdefault(name, []).extend(timed_ms(lambda: step(inputs), device, iters))  # noqa: B023
        for name, values in times.items():
            row[f"{name}{'+graphs' if graphs else ''}_ms"] = round(statistics.median(values), 2)
        rows.append(row)
        log.info("keyframes %d: %s", keyframes, {k: v for k, v in row.items() if k.endswith("_ms")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.step_variants import eager_step_set_up
    from personalive.backends.eager import EagerWindowStep

    module, device, dtype, make_inputs, result = eager_step_set_up(args.size, args.device)
    result["calls"] = []

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))

    inputs = cast(make_inputs(3, torch.Generator(device).manual_seed(3)), dtype)
    with kernels_off():
        calls = record_calls(EagerWindowStep(module), inputs)
    choice: dict[Call, str] = {}
    totals: dict[str, float] = {}
    for call, count in calls.items():
        row = asdict(call) | {"count": count} | time_call(call, device, args.iters)
        choice[call] = fastest(row)
        row["fastest"] = choice[call]
        for name in [*BACKENDS, "default"]:
            ms = row.get(f"{name}_ms")
            totals[name] = totals.get(name, 0.0) + count * (ms if ms is not None else row["default_ms"])
        totals["fastest"] = totals.get("fastest", 0.0) + count * row[f"{choice[call]}_ms"]
        result["calls"].append(row)
        log.info("%s x%d: %s", call.q[0], count, {k: v for k, v in row.items() if k.endswith("_ms")})
    # per backend: the step's attention ms at 3 keyframes if every call ran on it (the default's where it refuses)
    result["totals_3_keyframes_ms"] = {k: round(v, 3) for k, v in totals.items()}
    log.info("totals %s", result["totals_3_keyframes_ms"])
    save()
    result["steps"] = step_rows(module, make_inputs, device, dtype, choice, args.rounds, 5)
    save()
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
