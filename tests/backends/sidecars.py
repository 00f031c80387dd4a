"""A sidecar of a torch-built artifact (AOTInductor, compile cache, precompiled step) for this machine's CPU, as
the tests of their checks start from."""

from __future__ import annotations

import dataclasses

import torch

from personalive.backends import artifacts
from personalive.backends.torch_artifacts import device_facts
from personalive.config import RunConfig


def cpu_sidecar(kind: str, /, **fields) -> artifacts.Sidecar:
    """``kind``'s sidecar built on this CPU by this torch; ``fields`` replace the defaults (``kind`` too)."""
    facts = device_facts(torch.device("cpu"))
    meta = artifacts.Sidecar(
        kind=kind,
        precision="fp32",
        weights_hash="0" * 64,
        config=artifacts.config_subset(RunConfig()),
        max_keyframes=3,
        inputs=[],
        outputs=[],
        personalive_version="test",
        build_command=f"personalive build-engine --format {kind}",
        torch_version=facts["torch_version"],
        cuda_version=facts["cuda_version"],
        device_type="cpu",
    )
    return dataclasses.replace(meta, **fields)
