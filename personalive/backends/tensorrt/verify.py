"""Compare an exported graph or engine with the PyTorch window step on the same random inputs.

Relative error, as reported and checked: ``max|a - b| / max|b|`` over an output, where ``b`` is the fp32
PyTorch reference and ``a`` the artifact's output cast to fp32: the largest deviation measured against the
output's own scale. It stays meaningful where element-wise relative errors explode near zeros (latents and
motion tokens cross zero everywhere). An output also fails on a shape mismatch and on any NaN or Inf that the
reference does not have.

Default tolerances (:data:`DEFAULT_TOLERANCE`):
* fp32 1e-4 -- the same arithmetic in another runtime only differs by summation order and fused kernels, a few
  1e-6 relative for the tiny step on onnxruntime; 1e-4 leaves room for TF32-free GPU kernels at full size while a
  wrong weight or a mis-wired input gives errors of order 1e-1..1.
* fp16 2e-2 -- about 40x fp16's unit roundoff (4.9e-4): errors accumulate through ~60 layers of UNet, the
  DDIM step and the VAE decoder; a broken engine (the overflow/NaN kind) is far off.
* bf16 5e-2 -- about 13x bf16's unit roundoff (3.9e-3), the same reasoning with 3 fewer mantissa bits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from personalive import _optional
from personalive.errors import PersonaLiveError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2}


@dataclass
class OutputReport:
    """The worst over all draws of one output's comparison."""

    name: str
    max_abs: float = 0.0
    rel: float = 0.0
    nan: int = 0
    inf: int = 0
    ref_nan: int = 0
    ref_inf: int = 0
    min: float = math.inf
    max: float = -math.inf
    ref_min: float = math.inf
    ref_max: float = -math.inf
    shape_errors: list[str] = field(default_factory=list)

    def passed(self, tolerance: float) -> bool:
        extra_nonfinite = self.nan > self.ref_nan or self.inf > self.ref_inf
        return not self.shape_errors and not extra_nonfinite and self.rel <= tolerance

    def line(self, tolerance: float) -> str:
        status = "ok" if self.passed(tolerance) else "FAIL"
        text = (
            f"{self.name:<26} max_abs={self.max_abs:.3e} rel={self.rel:.3e} nan={self.nan}/{self.ref_nan} "
            f"inf={self.inf}/{self.ref_inf} range=[{self.min:.4g}, {self.max:.4g}] "
            f"ref=[{self.ref_min:.4g}, {self.ref_max:.4g}] {status}"
        )
        return text + (f" ({'; '.join(self.shape_errors)})" if self.shape_errors else "")


def update_report(report: OutputReport, actual: torch.Tensor, reference: torch.Tensor) -> None:
    """Fold one draw's comparison of ``actual`` with ``reference`` into ``report`` (worst case kept)."""
    import torch

    a, b = actual.detach().float().cpu(), reference.detach().float().cpu()
    report.nan += int(torch.isnan(a).sum())
    report.inf += int(torch.isinf(a).sum())
    report.ref_nan += int(torch.isnan(b).sum())
    report.ref_inf += int(torch.isinf(b).sum())
    for values, lo, hi in ((a, "min", "max"), (b, "ref_min", "ref_max")):
        finite = values[torch.isfinite(values)]
        if finite.numel():
            setattr(report, lo, min(getattr(report, lo), float(finite.min())))
            setattr(report, hi, max(getattr(report, hi), float(finite.max())))
    if a.shape != b.shape:
        report.shape_errors.append(f"shape {tuple(a.shape)} != reference {tuple(b.shape)}")
        return
    both = torch.isfinite(a) & torch.isfinite(b)
    diff = (a - b).abs()[both]
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(b[torch.isfinite(b)].abs().max()) if torch.isfinite(b).any() else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    report.max_abs, report.rel = max(report.max_abs, max_abs), max(report.rel, rel)


def keyframe_schedule(draws: int, max_keyframes: int) -> list[int]:
    """Keyframe counts of the draws: 0, the maximum, then the counts between, repeating."""
    order = [0] + ([max_keyframes] if max_keyframes else []) + list(range(1, max_keyframes))
    return [order[i % len(order)] for i in range(draws)]


@dataclass
class VerificationResult:
    reports: list[OutputReport]
    tolerance: float
    keyframes: list[int]

    @property
    def failed(self) -> list[OutputReport]:
        return [r for r in self.reports if not r.passed(self.tolerance)]

    def lines(self) -> list[str]:
        head = f"relative error = max|a-b| / max|ref| over each output; tolerance {self.tolerance:g}"
        return [head, *(r.line(self.tolerance) for r in self.reports)]


def compare_runs(
    run: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    reference: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    make_inputs: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
    *,
    output_names: list[str] | tuple[str, ...],
    draws: int,
    max_keyframes: int,
    tolerance: float,
    seed: int = 0,
    input_dtype: torch.dtype | None = None,
    generator_device: torch.device | str = "cpu",
) -> VerificationResult:
    """Run ``run`` and ``reference`` on ``draws`` random input sets and compare every output.

    ``make_inputs(num_keyframes, generator)`` draws fp32 inputs; ``run`` gets them cast to ``input_dtype``
    (floating tensors only), ``reference`` gets the fp32 originals. The generator lives on ``generator_device``
    (where ``make_inputs`` draws).
    """
    import torch

    if draws < 1:
        raise PersonaLiveError(f"--draws {draws}: must be >= 1")
    generator = torch.Generator(device=generator_device).manual_seed(seed)
    reports = {name: OutputReport(name) for name in output_names}
    schedule = keyframe_schedule(draws, max_keyframes)
    for draw, keyframes in enumerate(schedule):
        inputs = make_inputs(keyframes, generator)
        cast = {
            k: v.to(input_dtype) if input_dtype is not None and v.is_floating_point() else v for k, v in inputs.items()
        }
        actual = run(cast)
        expected = reference(inputs)
        for name in output_names:
            update_report(reports[name], actual[name], expected[name])
        log.debug("draw %d (%d keyframes) compared", draw, keyframes)
    return VerificationResult(list(reports.values()), tolerance, schedule)


# -------------------------------------------------------------------------------------------------- onnxruntime


class OnnxRunner:
    """An ONNX graph on onnxruntime: CUDA provider on a CUDA device when onnxruntime has it, else the CPU one."""

    def __init__(self, path: str | Path, device: torch.device | None = None):
        ort = _optional.onnxruntime()
        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # don't spin against torch
        # memory over speed: pre-packed weight copies and the arena made a full-size fp32 graph (7.2 GB of weights)
        # exceed 24 GB of host memory; verification runs a few windows, not a video
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("onnxruntime session on %s", ", ".join(self.session.get_providers()))

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        feed = {}
        for name in self.input_names:
            tensor = inputs[name].detach().cpu()
            # numpy has no bfloat16: hand it over as raw 16-bit words is not supported by ort's feed; use fp32
            if tensor.dtype == torch.bfloat16:
                raise PersonaLiveError(
                    f"{self.path}: onnxruntime cannot be fed bf16 input {name!r}; verify the engine"
                )
            feed[name] = tensor.contiguous().numpy()
        results = self.session.run(self.output_names, feed)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, results, strict=True)}
