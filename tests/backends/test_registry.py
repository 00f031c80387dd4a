"""The backend table: every entry resolves to a class with the shared interface; model loading follows it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media.synth import make_video
from PIL import Image
from typer.testing import CliRunner

from personalive import weights
from personalive._optional import is_available
from personalive.backends import BACKENDS, backend_class
from personalive.cli import app
from personalive.errors import ConfigError, WeightsError
from personalive.pipeline.animate import PIPELINE_NETWORKS
from personalive.pipeline.window import WINDOW_STEP_NETWORKS


@pytest.mark.parametrize("name", sorted(BACKENDS), ids=lambda name: f"backend-{name}")
def test_every_backend_has_the_shared_interface(name):
    cls = backend_class(name)
    assert cls.name == name
    assert set(cls.networks) <= {*weights.NETWORKS, "reference_projections"}
    assert callable(cls.from_models) and callable(cls.check_available)


def test_pytorch_backends_need_the_step_networks_tensorrt_only_the_reference_projections():
    assert backend_class("eager").networks == backend_class("compile").networks == WINDOW_STEP_NETWORKS
    # the engine holds the step; the reference keys/values it takes come from the UNet's to_k/to_v layers alone
    assert backend_class("tensorrt").networks == ("reference_projections",)
    assert backend_class("aoti").networks == WINDOW_STEP_NETWORKS  # its package holds no weights: they are bound
    assert "denoising_unet" not in PIPELINE_NETWORKS


def test_reference_projections_alone_equal_the_whole_unets(tiny_weights):
    whole = weights.load_models(tiny_weights, torch.float32, "cpu", networks=["denoising_unet"])
    alone = weights.load_models(tiny_weights, torch.float32, "cpu", networks=["reference_projections"])
    assert alone.denoising_unet is None and whole.reference_projections is None
    n_whole = sum(p.numel() for p in whole.denoising_unet.parameters())
    n_alone = sum(p.numel() for p in alone.reference_projections.parameters())
    assert 0 < n_alone < n_whole / 10
    attentions = whole.denoising_unet.reference_attentions()
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(1, 5, a.to_k.in_features, generator=g) for a in attentions]
    expected = whole.denoising_unet.project_reference(features)
    got = alone.reference_projections.project_reference(features)
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e, rtol=0, atol=0)


def test_reference_projections_name_a_missing_key(tiny_weights, tmp_path):
    import shutil

    broken = tmp_path / "pw"
    shutil.copytree(tiny_weights, broken)
    path = broken / "personalive" / "denoising_unet.pth"
    state = torch.load(path, weights_only=True)
    key = next(k for k in state if k.endswith("attn1.to_k.weight"))
    del state[key]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=f"denoising_unet.pth: missing key {key}"):
        weights.load_models(broken, torch.float32, "cpu", networks=["reference_projections"])


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="runtime.backend='onnx': expected one of eager, compile, tensorrt, aoti"):
        backend_class("onnx")


def test_load_models_loads_only_the_named_networks(tiny_weights):
    models = weights.load_models(tiny_weights, torch.float32, "cpu", networks=PIPELINE_NETWORKS)
    assert models.denoising_unet is None
    assert all(getattr(models, name) is not None for name in PIPELINE_NETWORKS)


@pytest.mark.skipif(is_available("tensorrt"), reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_fails_before_loading(tmp_path, tiny_weights, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a network was loaded")

    monkeypatch.setattr(weights, "load_models", no_loading)
    ref = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(ref)
    drive = make_video(tmp_path / "drive.mp4", frames=3)
    args = ["animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", "--weights", tiny_weights]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--backend", "tensorrt", "--device", "cpu"]])
    assert result.exit_code == 2, result.output
    assert "TensorRT is not installed" in result.output
    assert not (tmp_path / "o.mp4").exists()


def test_onnx_verification_code_imports_nothing_of_tensorrt():
    import subprocess
    import sys

    code = (
        "import sys, personalive.engines, personalive.backends.onnx, personalive.backends.verify, "
        "personalive.backends.artifacts, personalive.backends.eager; "
        "print(sorted(m for m in sys.modules if 'tensorrt' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
