"""The eager step's fast-path rewrites on and off, timed in one process, with the output deviation between them.

    python -m benchmarks.step_variants --out FILE.json [--size full|tiny] [--device cuda|cpu] [--rounds 4]

Variants (the networks' weights are shared; only the code path differs):

* ``fast``: the product (split GEGLU projections, reference keys/values appended per frame without an
  intermediate copy, the VAE's attention output back in NCHW, contiguous / frame-major tokens in the transformers
  with their 1x1 convolutions as matmuls, GroupNorm statistics over sub-rows on CUDA);
* ``nchw vae``: the product with the VAE decoder in NCHW (the code before the eleventh session; the product runs
  it channels-last on CUDA, ``personalive.models.memory_layout``);
* ``plain group norm``: the product with PyTorch's GroupNorm kernels (``SplitGroupNorm.split = 1``, the code
  before the tenth session);
* ``joined attention``: the product with every attention through SDPA, the reference tokens joined per frame
  (``personalive.models.attention_kernels`` off: the code before the twelfth session);
* ``diffusers resnets``: the product with diffusers' own residual-block forward (``personalive.models.resnet``
  off: the code before the twelfth session);
* ``per-sample statistics``: the product with the channels-last GroupNorm's statistics from batch norm's kernel
  once per sample (the code before the thirteenth session; the product sums every sample at once in fp32;
  call AL measured ``torch.std_mean``'s one Welford reduction too, slower and rounded to fp16);
* ``before``: the decoder NCHW, PyTorch's GroupNorm, the joined attention, diffusers' residual blocks, diffusers' GEGLU
  forward, the per-frame copy then the concatenation, diffusers' attention processor
  in the VAE, the transformers' permuted token views and convolutions (the code before the sixth session).

For 0 and 3 keyframes: plain eager (the flag set before each round of calls) and with CUDA graphs (one capture
per variant: the kernels are fixed at capture). Rounds alternate the variants, so a GPU shared with another job
slows both alike; CUDA-event medians over all rounds. (``fast, autotuned``, cuDNN's autotuning on, ran in the
seventh session's call R: no faster; the tenth session replaced it with ``plain group norm``.)

Inputs are ``verify-engine``'s (:class:`~personalive.backends.verify.VerificationInputs`: the older frames' motion
tokens at the scale the motion encoder produces). Deviations, ``max|a - b| / max|b|`` per output: ``fast`` from
``before`` and from ``plain group norm`` in the run's dtype, and with ``--fp32-reference`` both from an fp32 copy
of the same networks (same weights, TF32 off), which says whether the rewrites moved the fp16 result further
from the exact one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import statistics
from pathlib import Path

import torch

log = logging.getLogger("benchmarks.step_variants")


@contextlib.contextmanager
def before(module: torch.nn.Module):
    """The code path before the fast-path rewrites, for the duration of the block."""
    from personalive.models import attention_3d
    from personalive.models.feed_forward import SplitGEGLU

    def old_append(tokens, shared, frames):
        return torch.cat([tokens, attention_3d.per_frame(shared, frames)], dim=1)

    from diffusers.models.attention_processor import AttnProcessor2_0

    from personalive.models.attention_3d import SpatialTransformer
    from personalive.models.motion_module import TemporalTransformer
    from personalive.models.vae import NCHWAttnProcessor

    layouts = [m for m in module.modules() if isinstance(m, (SpatialTransformer, TemporalTransformer))]
    gegl = [m for m in module.modules() if isinstance(m, SplitGEGLU)]
    saved = attention_3d._append_per_frame
    attention_3d._append_per_frame = old_append
    for m in gegl:
        m.split = False
    module.vae.set_attn_processor(AttnProcessor2_0())
    for m in layouts:
        m.fast_layout = False
    try:
        yield
    finally:
        attention_3d._append_per_frame = saved
        for m in gegl:
            m.split = True
        module.vae.set_attn_processor(NCHWAttnProcessor())
        for m in layouts:
            del m.fast_layout  # back to the class default


def timed_ms(fn, device: torch.device, iters: int) -> list[float]:
    """``iters`` calls, ms each, on the product's benchmark clock (CUDA events on a GPU)."""
    from personalive.bench import Clock

    clock = Clock(device)
    return [1000 * clock.time(fn) for _ in range(iters)]


def deviation(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """max|a - b| / max|b|, as ``verify-engine`` measures it."""
    from personalive.backends.verify import OutputReport, update_report

    report = OutputReport("output")
    update_report(report, actual, reference)
    return report.rel


@contextlib.contextmanager
def plain_group_norm(module: torch.nn.Module):
    """PyTorch's GroupNorm kernels inside the block (every SplitGroupNorm takes its plain path)."""
    from personalive.models.group_norm import SplitGroupNorm

    SplitGroupNorm.split = 1
    try:
        yield
    finally:
        SplitGroupNorm.split = None


@contextlib.contextmanager
def decoder_layout(module: torch.nn.Module, channels_last: bool):
    """The VAE decoder's memory layout inside the block (``set_decoder_layout``); the one before, after it."""
    from personalive.models.memory_layout import decoder_channels_last, set_decoder_layout

    before_cl = decoder_channels_last(module.vae)
    set_decoder_layout(module.vae, channels_last)
    try:
        yield
    finally:
        set_decoder_layout(module.vae, before_cl)


@contextlib.contextmanager
def diffusers_resnets(module: torch.nn.Module):
    """diffusers' own ResnetBlock2D forward inside the block (the code before the twelfth session)."""
    from diffusers.models.resnet import ResnetBlock2D

    from personalive.models.resnet import LeanResnetBlock2D

    lean = [m for m in module.modules() if type(m) is LeanResnetBlock2D]
    for m in lean:
        m.__class__ = ResnetBlock2D
    try:
        yield
    finally:
        for m in lean:
            m.__class__ = LeanResnetBlock2D


@contextlib.contextmanager
def kernels_off():
    """Every attention through SDPA, the reference tokens joined per frame (``attention_kernels.enabled``)."""
    from personalive.models import attention_kernels

    attention_kernels.enabled = False
    try:
        yield
    finally:
        attention_kernels.enabled = True


def joined_attention(module: torch.nn.Module):
    """Every attention through SDPA, the reference tokens joined per frame (before the twelfth session)."""
    return kernels_off()


def per_sample_statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The channels-last GroupNorm's statistics before the thirteenth session: batch norm's statistics kernel once
    per sample (fp32), as the variant ``per-sample statistics`` (CUDA's kernel; elsewhere Welford)."""
    if not x.is_cuda:
        var, mean = torch.var_mean(x.float(), dim=(2, 3), correction=0)
        return mean, var
    stats = [torch.batch_norm_stats(x[i : i + 1], eps) for i in range(x.shape[0])]
    return torch.stack([m for m, _ in stats]), torch.stack([s for _, s in stats]).pow(-2) - eps


@contextlib.contextmanager
def _statistics(candidate):
    """The channels-last GroupNorm's statistics from ``candidate`` inside the block."""
    from personalive.models import group_norm

    product = group_norm.channels_last_statistics
    group_norm.channels_last_statistics = candidate
    try:
        yield
    finally:
        group_norm.channels_last_statistics = product


def per_sample_norm_statistics(module: torch.nn.Module):
    """The channels-last GroupNorm's statistics from :func:`per_sample_statistics` inside the block."""
    return _statistics(per_sample_statistics)


VARIANTS = {  # name -> the context its calls run in (``module`` given)
    "fast": lambda module: contextlib.nullcontext(),
    "nchw vae": lambda module: decoder_layout(module, False),
    "plain group norm": plain_group_norm,
    "joined attention": joined_attention,
    "diffusers resnets": diffusers_resnets,
    "per-sample statistics": per_sample_norm_statistics,
    "before": lambda module: _before_all(module),
}


@contextlib.contextmanager
def _before_all(module: torch.nn.Module):
    """The code before the sixth session: its rewrites off, PyTorch's GroupNorm, the decoder NCHW, every attention
    through SDPA (the reference tokens joined per frame)."""
    with before(module), plain_group_norm(module), decoder_layout(module, False), joined_attention(module):
        with diffusers_resnets(module):
            yield


def deviations(prefix: str, actual: dict, reference: dict) -> dict[str, float]:
    return {f"{prefix}_{name}": deviation(actual[name].float(), reference[name].float()) for name in reference}


def compare(module, inputs: dict, device: torch.device, graphs: bool, rounds: int, iters: int) -> dict:
    """Deviation of ``fast`` from ``before``, then every variant timed in alternating rounds, plain and (CUDA)
    graphed."""
    from personalive.backends.eager import EagerWindowStep
    from personalive.backends.graphs import CAPTURE_AFTER

    plain = EagerWindowStep(module)
    fast_out = plain(inputs)
    with _before_all(module):
        before_out = plain(inputs)
    with plain_group_norm(module):
        plain_gn_out = plain(inputs)
    with decoder_layout(module, False):
        nchw_out = plain(inputs)
    with joined_attention(module):
        joined_out = plain(inputs)
    with diffusers_resnets(module):
        resnets_out = plain(inputs)
    with per_sample_norm_statistics(module):
        per_sample_out = plain(inputs)
    row = deviations("deviation", fast_out, before_out) | deviations("deviation_gn", fast_out, plain_gn_out)
    row |= deviations("deviation_nchw", fast_out, nchw_out) | deviations("deviation_joined", fast_out, joined_out)
    row |= deviations("deviation_resnets", fast_out, resnets_out)
    row |= deviations("deviation_per_sample", fast_out, per_sample_out)
    graphed = {}
    if graphs:  # one capture per variant: the replayed kernels are fixed at capture
        for name, context in VARIANTS.items():
            with context(module):
                graphed[name] = EagerWindowStep(module, cuda_graphs=True)
                # captured at its CAPTURE_AFTER-th call: every call up to the capture inside this variant's context
                # (call AA ran one call here and captured later, outside it: its graphed rows were all ``fast``)
                for _ in range(CAPTURE_AFTER):
                    graphed[name](inputs)
                if len(graphed[name].graphed.graphs) != 1:  # a failed capture runs uncaptured: no graphed row
                    # (call AJ: the ``before`` variant's capture failed once at 3 keyframes and the script stopped)
                    log.warning("%s: the capture failed; its graphed row is left out", name)
                    row[f"{name}_capture_failed"] = True
                    del graphed[name]
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, context in VARIANTS.items():
            with context(module):
                plain(inputs)  # this path's warm-up
                times.setdefault(name, []).extend(timed_ms(lambda: plain(inputs), device, iters))
            if name in graphed:
                step = graphed[name]
                times.setdefault(f"{name}+graphs", []).extend(timed_ms(lambda: step(inputs), device, iters))  # noqa: B023
    for name, values in times.items():
        row[f"{name}_ms"] = round(statistics.median(values), 2)
    row["n_per_variant"] = rounds * iters
    return row


def fp32_deviations(module, reference, inputs32: dict, dtype: torch.dtype) -> dict[str, float]:
    """Both paths in ``dtype`` against ``reference`` (an fp32 copy of ``module``, TF32 off) on the same inputs."""
    from personalive.backends.eager import EagerWindowStep
    from personalive.backends.verify import strict_fp32

    with strict_fp32():
        exact = EagerWindowStep(reference)(inputs32)
    inputs = cast(inputs32, dtype)
    plain = EagerWindowStep(module)
    row = deviations("fp32_deviation_fast", plain(inputs), exact)
    with _before_all(module):
        row |= deviations("fp32_deviation_before", plain(inputs), exact)
    with plain_group_norm(module):
        row |= deviations("fp32_deviation_plain_gn", plain(inputs), exact)
    with decoder_layout(module, False):
        row |= deviations("fp32_deviation_nchw", plain(inputs), exact)
    return row


def cast(inputs: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def eager_step_set_up(size: str, device_name: str) -> tuple:
    """Random ``size`` networks' window step as the eager backend builds it (the decoder channels-last on CUDA),
    its device and dtype, ``verify-engine``'s input maker for it, and a result dict with the versions."""
    from benchmarks.random_run import random_run
    from personalive.backends.verify import VerificationInputs
    from personalive.config import load_config
    from personalive.pipeline.window import build_window_module

    models, device, options = random_run(size, device_name)
    config = load_config(options={**options, "runtime.cuda_graphs": "off"})
    module = build_window_module(models, config, channels_last_decoder=device.type == "cuda").eval()
    dtype = next(module.denoising_unet.parameters()).dtype
    result: dict = {"torch": torch.__version__}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    return module, device, dtype, VerificationInputs(models, config, device), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--fp32-reference", action="store_true", help="also both paths against an fp32 copy")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    module, device, dtype, make_inputs, result = eager_step_set_up(args.size, args.device)
    result["rows"] = []
    reference = copy.deepcopy(module).float() if args.fp32_reference else None

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))

    graphs = device.type == "cuda"
    for keyframes in (0, 3):
        inputs32 = make_inputs(keyframes, torch.Generator(device).manual_seed(keyframes))
        with torch.inference_mode():
            row = {"keyframes": keyframes}
            if reference is not None:
                row |= fp32_deviations(module, reference, inputs32, dtype)
            row |= compare(module, cast(inputs32, dtype), device, graphs, args.rounds, args.iters)
        result["rows"].append(row)
        log.info("%s", row)
        save()
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
