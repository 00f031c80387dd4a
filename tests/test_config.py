from pathlib import Path

import pytest
import yaml

from personalive.config import RunConfig, config_yaml, load_config
from personalive.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


DEFAULT_YAML_HEADER = (
    "# The defaults of personalive/config.py, generated: do not edit. Regenerate with\n"
    "#   env -u PERSONALIVE_WEIGHTS personalive config show > configs/default.yaml\n"
    "# Merge your own with --config FILE, override single keys with --set key=value.\n"
)


def test_default_yaml_is_generated_from_the_dataclasses(monkeypatch):
    monkeypatch.delenv("PERSONALIVE_WEIGHTS", raising=False)
    on_disk = (ROOT / "configs" / "default.yaml").read_text()
    assert on_disk == DEFAULT_YAML_HEADER + config_yaml(RunConfig())


def test_config_show_prints_the_merged_config(tmp_path):
    from typer.testing import CliRunner

    from personalive.cli import app

    (tmp_path / "c.yaml").write_text("generation:\n  seed: 5\n  height: 256\n")
    args = ["config", "show", "--config", str(tmp_path / "c.yaml"), "--set", "generation.seed=3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["generation"]["seed"] == 3 and shown["generation"]["height"] == 256
    assert shown == yaml.safe_load(config_yaml(load_config(tmp_path / "c.yaml", ["generation.seed=3"])))


def test_yaml_then_set_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("generation:\n  seed: 5\n  height: 256\nmodel:\n  dtype: bf16\n")
    cfg = load_config(cfg_file, ["generation.seed=9", "media.crf=23"])
    assert cfg.generation.seed == 9  # --set wins over the file
    assert cfg.generation.height == 256  # file wins over defaults
    assert cfg.model.dtype == "bf16"
    assert cfg.media.crf == 23
    assert cfg.generation.width == 512


def test_extra_options_sit_between_file_and_set(tmp_path):
    cfg = load_config(None, ["generation.seed=3"], options={"generation.seed": 1, "model.dtype": "fp32"})
    assert cfg.generation.seed == 3
    assert cfg.model.dtype == "fp32"


def test_unknown_key_is_rejected_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'generation.sed'.*generation.seed"):
        load_config(None, ["generation.sed=1"])
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("generaton:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'generaton'"):
        load_config(cfg_file)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match=r"wrong type for 'generation.seed'"):
        load_config(None, ["generation.seed=abc"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("model.dtype=fp8", "model.dtype='fp8': expected one of auto, fp16, bf16, fp32"),
        ("generation.height=500", "multiple of 64"),
        ("runtime.backend=onnx", "expected one of eager, compile, tensorrt"),
        ("media.crf=99", "between 0 and 51"),
        ("media.crop=zoom", "media.crop='zoom': expected one of center, pad, stretch"),
        ("scheduler.prediction_type=v_prediction", "PersonaLive predicts noise; use 'epsilon'"),
        ("generation.inference_steps=6", "must be a multiple of generation.adaptive_steps=4"),
    ],
)
def test_values_are_validated(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [item])


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["generation.seed"])


def test_upstream_prompt_yaml_is_mapped(tmp_path):
    (tmp_path / "personalive_online.yaml").write_text(
        "batch_size: 1\nheight: 256\nwidth: 256\ntemporal_adaptive_step: 4\ntemporal_window_size: 4\n"
        "num_inference_steps: 4\ndtype: 'fp32'\nfps: 16\n"
        "pretrained_base_model_path: './weights/sd-image-variations-diffusers'\n"
        "denoising_unet_path: './weights/personalive/denoising_unet.pth'\nseed: 7\n"
    )
    cfg = load_config(tmp_path / "personalive_online.yaml")
    assert (cfg.generation.height, cfg.generation.width, cfg.generation.seed) == (256, 256, 7)
    assert cfg.model.dtype == "fp32"
    assert Path(cfg.model.weights_dir) == tmp_path / "weights"
    (tmp_path / "offline.yaml").write_text(
        "pretrained_base_model_path: './pw/sd-image-variations-diffusers'\nweight_dtype: 'fp16'\n"
        "inference_config: 'configs/inference/inference_stage3.yaml'\n"
        "test_cases:\n  'demo/ref_image.png':\n  - 'demo/driving_video.mp4'\n"
    )
    assert load_config(tmp_path / "offline.yaml").model.dtype == "fp16"


def test_weights_dir_follows_environment(monkeypatch):
    monkeypatch.setenv("PERSONALIVE_WEIGHTS", "/somewhere/pw")
    assert load_config().model.weights_dir == "/somewhere/pw"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_on_and_off_are_words_not_booleans(tmp_path):
    # YAML 1.1 reads `on`/`off` as booleans: `--set runtime.cuda_graphs=on` was refused as 'True'
    from personalive.config import load_config

    assert str(load_config(None, ["runtime.cuda_graphs=on"]).runtime.cuda_graphs) == "on"
    assert str(load_config(None, ["runtime.cuda_graphs=off"]).runtime.cuda_graphs) == "off"
    path = tmp_path / "run.yaml"
    path.write_text("runtime:\n  cuda_graphs: off\n")
    assert str(load_config(path).runtime.cuda_graphs) == "off"
    # a boolean given to a choice without on/off is still refused with the choices named
    with pytest.raises(ConfigError, match="expected one of"):
        load_config(None, ["runtime.backend=yes"])
