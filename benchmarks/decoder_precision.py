"""The window step in fp16 against fp32, eagerly, for each decoder: is a difference verify-engine reports the
artifact's or the precision's?

Call AZ (eighteenth session): `verify-engine` of the precompiled step with TAESD found its frames 5.8e-2 from the
fp32 step (tolerance 2e-2) while every latent output was within 1e-3, as with the KL VAE (frames 2.0e-3). This runs
verify-engine's own comparison (the same draws, the same fp32 reference) with the eager fp16 step in the
artifact's place, for both decoders, and each decoder alone on the reference's fp32 latents (its own fp16 error,
without the UNet's). If eager fp16 shows the same error, the artifact is faithful and the error is fp16 TAESD's.

    python -m benchmarks.decoder_precision --weights DIR --device cuda --out results.json [--size 512] [--draws 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("benchmarks.decoder_precision")


def _worst(a: torch.Tensor, b: torch.Tensor) -> dict:
    diff = (a.float() - b.float()).abs()
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "ref_max": float(b.abs().max())}


def compare(weights: Path, decoder: str, device: torch.device, size: int, draws: int) -> dict:
    from personalive.backends.verify import VerificationInputs, compare_runs, reference_cases
    from personalive.config import load_config
    from personalive.engines import _load_models, _named_outputs
    from personalive.pipeline.window import OUTPUT_NAMES, build_window_module

    options = {"model.weights_dir": str(weights), "model.decoder": decoder, "runtime.device": str(device)}
    options.update({"generation.height": size, "generation.width": size})
    config = load_config(None, [], options)
    generator = torch.Generator(device=device).manual_seed(config.generation.seed)
    with torch.no_grad():
        models = _load_models(config, "fp32", device)
        reference = build_window_module(models, config).eval()
        inputs = VerificationInputs(models, config, device)
        cases = reference_cases(_named_outputs(reference), inputs, draws, 3, generator)
        latents = [case.expected["clean_latents"] for case in cases]
        decoded32 = [reference.decode(x) for x in latents]
        del reference, models
        gc.collect()
        models = _load_models(config, "fp16", device)
        step = build_window_module(models, config).eval()
        result = compare_runs(
            _named_outputs(step), cases, output_names=OUTPUT_NAMES, tolerance=2e-2, input_dtype=torch.float16
        )
        alone = [_worst(step.decode(x.half()), ref) for x, ref in zip(latents, decoded32, strict=True)]
    del step, models
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "decoder": decoder,
        "keyframes": result.keyframes,
        "step_fp16_vs_fp32": {r.name: {"max_abs": r.max_abs, "rel": r.rel} for r in result.reports},
        "decoder_alone_fp16_vs_fp32_on_the_same_latents": alone,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device(args.device)
    rows = []
    for decoder in ("taesd", "vae"):
        rows.append(compare(args.weights, decoder, device, args.size, args.draws))
        log.info("%s", json.dumps(rows[-1]))
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
