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
from personalive.errors import ConfigError
from personalive.pipeline.animate import PIPELINE_NETWORKS
from personalive.pipeline.window import WINDOW_STEP_NETWORKS


@pytest.mark.parametrize("name", sorted(BACKENDS), ids=lambda name: f"backend-{name}")
def test_every_backend_has_the_shared_interface(name):
    cls = backend_class(name)
    assert cls.name == name
    assert set(cls.networks) <= set(weights.NETWORKS)
    assert callable(cls.from_models) and callable(cls.check_available)


def test_pytorch_backends_need_the_step_networks_engines_none():
    assert backend_class("eager").networks == backend_class("compile").networks == WINDOW_STEP_NETWORKS
    assert backend_class("tensorrt").networks == ()
    assert "denoising_unet" not in PIPELINE_NETWORKS


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="runtime.backend='onnx': expected one of eager, compile, tensorrt"):
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
