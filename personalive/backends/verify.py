"""Compare an exported graph or engine with the PyTorch window step on the same random inputs.

Relative error, as reported and checked: ``max|a - b| / max|b|`` over an output, where ``b`` is the fp32
PyTorch reference and ``a`` the artifact's output cast to fp32: the largest deviation measured against the
output's own scale. It stays meaningful where element-wise relative errors explode near zeros (latents and
motion tokens cross zero everywhere). An output also fails on a shape mismatch and on any NaN or Inf that the
reference does not have.

Default tolerances (:data:`DEFAULT_TOLERANCE`):
* fp32 1e-4 -- the same arithmetic in another runtime only differs by summation order and fused kernels, a few
  1e-6 relative for the tiny step on onnxruntime; 1e-4 leaves room for TF32-free GPU kernels at full size while a
  wrong weight or a mis-wired input gives errors of order 1e-1..1. The reference is computed with TF32 off
  (:func:`strict_fp32`): PyTorch lets cuDNN convolutions use TF32 by default, which alone moves an fp32 result
  by ~1e-3. Measured at full size (H200 reference, onnxruntime CPU, random weights, reference with cuDNN's
  default TF32): 1.5e-3 at worst, so an fp32 artifact at full size may still miss 1e-4 through the DDIM chain's
  amplification of random weights' large latents; pass ``--tolerance`` to judge it (benchmarks/RESULTS.md).
* fp16 2e-2 -- about 40x fp16's unit roundoff (4.9e-4): errors accumulate through ~60 layers of UNet, the
  DDIM step and the VAE decoder; a broken engine (the overflow/NaN kind) is far off.
* bf16 5e-2 -- about 13x bf16's unit roundoff (3.9e-3), the same reasoning with 3 fewer mantissa bits.

An fp16 or bf16 output beyond its tolerance is still the artifact's faithful result when the PyTorch step in the
artifact's own precision is as far from the fp32 reference on the same draws (:attr:`VerificationResult.own_error`,
measured only then): the precision's error, reported as such, not the artifact's. Call BA (H200, full-size random
weights): TAESD's fp16 frames were 6.1e-2 from fp32 eagerly and 5.8e-2 precompiled, the KL VAE's 2.7e-3; TAESD
alone in fp16 on the fp32 latents 5.5e-2. A wrong artifact is not excused: shape errors and NaN or Inf the
reference lacks never are, and the artifact's error may exceed the step's own by :data:`OWN_ERROR_MARGIN` at most.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from personalive.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class strict_fp32:  # noqa: N801 - used as a context manager, like torch's own lower-case ones
    """TF32 off for cuDNN and cuBLAS inside the block (restored after): an fp32 reference has to be IEEE fp32, and
    PyTorch lets convolutions use TF32 by default.

    Through the legacy ``allow_tf32`` flags (PyTorch refuses legacy reads once the per-backend ``fp32_precision``
    strings were set in ways the flags cannot express), and then any string the flags did not bring back is set
    back itself: the legacy setters cannot restore matmul's default ``"none"`` (it comes back as ``"ieee"``), and
    that string is part of inductor's FX graph cache key, so after a verify-engine every later compilation in the
    process was keyed apart from a fresh process's (a compile cache built there missed everywhere else)."""

    def __enter__(self) -> strict_fp32:
        import torch

        backends = torch.backends
        owners = [backends.cuda.matmul, getattr(backends.cudnn, "conv", None), getattr(backends.cudnn, "rnn", None)]
        self.strings = [(o, o.fp32_precision) for o in owners if hasattr(o, "fp32_precision")]  # none before 2.9
        self.saved = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
        backends.cudnn.allow_tf32 = False
        backends.cuda.matmul.allow_tf32 = False
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        for owner, value in self.strings:
            if owner.fp32_precision != value:
                owner.fp32_precision = value


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


# how far beyond the PyTorch step's own error in its precision an artifact's output may be and still be excused
OWN_ERROR_MARGIN = 1.5


@dataclass
class VerificationResult:
    reports: list[OutputReport]
    tolerance: float
    keyframes: list[int]
    # per output: the PyTorch step's relative error in the artifact's precision on the same draws (see the module
    # docstring); filled by the caller only when an output failed
    own_error: dict[str, float] = field(default_factory=dict)

    def excused(self, report: OutputReport) -> bool:
        """``report`` fails the tolerance as the PyTorch step in the artifact's precision does, no worse."""
        own = self.own_error.get(report.name)
        if own is None or own <= self.tolerance or report.shape_errors:
            return False
        extra_nonfinite = report.nan > report.ref_nan or report.inf > report.ref_inf
        return not extra_nonfinite and report.rel <= OWN_ERROR_MARGIN * own

    @property
    def failed(self) -> list[OutputReport]:
        return [r for r in self.reports if not r.passed(self.tolerance) and not self.excused(r)]

    def lines(self) -> list[str]:
        head = f"relative error = max|a-b| / max|ref| over each output; tolerance {self.tolerance:g}"
        lines = [head]
        for r in self.reports:
            line = r.line(self.tolerance)
            if self.excused(r):
                line = line.removesuffix(" FAIL") + (
                    f" ok: the PyTorch step in this precision is {self.own_error[r.name]:.3e} from the reference"
                )
            lines.append(line)
        return lines


@dataclass
class VerificationCase:
    """One draw: fp32 inputs with ``keyframes`` history keyframes and the reference's outputs on them."""

    keyframes: int
    inputs: dict[str, torch.Tensor]
    expected: dict[str, torch.Tensor]


def reference_cases(
    reference: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    make_inputs: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
    draws: int,
    max_keyframes: int,
    generator: torch.Generator,
) -> list[VerificationCase]:
    """``draws`` input sets (keyframe counts from :func:`keyframe_schedule`) with the reference's outputs.

    Computed before the artifact is opened, so that the reference and the artifact (each several GB at full size)
    never sit in memory together.
    """
    import torch

    if draws < 1:
        raise ConfigError(f"--draws {draws}: must be >= 1")
    cases = []
    with torch.no_grad(), strict_fp32():
        for keyframes in keyframe_schedule(draws, max_keyframes):
            inputs = make_inputs(keyframes, generator)
            cases.append(VerificationCase(keyframes, inputs, reference(inputs)))
    return cases


def compare_runs(
    run: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    cases: list[VerificationCase],
    *,
    output_names: list[str] | tuple[str, ...],
    tolerance: float,
    input_dtype: torch.dtype | None = None,
) -> VerificationResult:
    """Run ``run`` on every case's inputs and compare every output with the case's expected one.

    ``run`` gets the inputs cast to ``input_dtype`` (floating tensors only); the expected outputs were computed
    from the fp32 originals.
    """
    reports = {name: OutputReport(name) for name in output_names}
    for draw, case in enumerate(cases):
        cast = {
            k: v.to(input_dtype) if input_dtype is not None and v.is_floating_point() else v
            for k, v in case.inputs.items()
        }
        actual = run(cast)
        for name in output_names:
            update_report(reports[name], actual[name], case.expected[name])
        log.debug("draw %d (%d keyframes) compared", draw, case.keyframes)
    return VerificationResult(list(reports.values()), tolerance, [case.keyframes for case in cases])


def own_error(step: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], cases, dtype) -> dict[str, float]:
    """Each output's relative error against the cases' fp32 reference of ``step`` (the PyTorch step in ``dtype``)
    on the same draws: what :attr:`VerificationResult.own_error` holds."""
    import torch

    names = list(cases[0].expected)
    with torch.no_grad():
        result = compare_runs(step, cases, output_names=names, tolerance=math.inf, input_dtype=dtype)
    return {r.name: r.rel for r in result.reports}


class VerificationInputs:
    """fp32 random window inputs (``example_window_inputs``) with the older frames' motion tokens at the scale the
    loaded motion encoder produces, measured once on random face crops.

    Tokens at a fixed RMS can be far from what the weights produce (RMS 40 against about 4 for the tiny random
    encoder), which makes the UNet ill-conditioned: the fp32 PyTorch step then differs from its own fp64 run by
    ~1e-2 and no exported graph could be checked to 1e-4. At the encoder's own scale the two agree to ~1e-7.
    """

    def __init__(self, models, cfg, device):
        self.models, self.cfg, self.device = models, cfg, device
        self.token_rms: float | None = None

    def __call__(self, num_keyframes: int, generator) -> dict:
        import torch

        from personalive.pipeline.window import example_window_inputs

        inputs = example_window_inputs(
            self.models, self.cfg, self.device, torch.float32, num_keyframes=num_keyframes, generator=generator
        )
        if self.token_rms is None:
            with torch.no_grad():
                tokens = self.models.motion_encoder(inputs["motion"].to(self.models.dtype)).float()
            self.token_rms = float(tokens.pow(2).mean().sqrt())
        old = inputs["motion_hidden_states"]
        inputs["motion_hidden_states"] = old * (self.token_rms / float(old.pow(2).mean().sqrt()))
        return inputs
