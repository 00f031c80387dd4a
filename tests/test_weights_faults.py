"""Damaged weight contents through the CLI: `weights check` reads every byte, loading refuses NaN, the hash sees
every byte, and a broken config names its own file."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from media.synth import make_video
from PIL import Image
from typer.testing import CliRunner

from personalive.cli import app

pytest.importorskip("personalive.models.denoising_unet")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIVE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def copy(tiny_weights, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_weights, tmp_path / "copy"))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def error_line(result) -> str:
    """The command's own error line: the last one (`weights check` logs each problem before it)."""
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines and "Traceback" not in result.output, result.output
    return lines[-1]


def weights_hash_of(result) -> str:
    match = re.search(r"weights hash ([0-9a-f]{64})", result.output)
    assert match, result.output
    return match.group(1)


def _largest_member(path: Path) -> tuple[str, int, int]:
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.filename, info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_byte_fails_check_and_changes_the_hash(copy):
    clean = run("weights", "check", copy)
    assert clean.exit_code == 0, clean.output
    target = copy / "personalive" / "motion_encoder.pth"
    name, offset, size = _largest_member(target)
    data = bytearray(target.read_bytes())
    at = offset + size // 2
    assert 1 << 20 < at < len(data) - (1 << 20)  # a byte the old first/last-MiB hash never read
    assert size > 1 << 20  # a member too big for the cheap CRC check at load
    data[at] ^= 0x01
    target.write_bytes(bytes(data))
    result = run("weights", "check", copy)
    assert result.exit_code == 2
    assert f"motion_encoder.pth: member {name} is corrupt (Bad CRC-32" in error_line(result)
    # loading does not read every CRC (the cheap path), but the hash that engines are tied to changes
    from personalive.weights import weights_hash

    assert weights_hash(copy) != weights_hash_of(clean)


def test_nan_weights_named_by_check_and_refused_at_load(copy, tmp_path):
    target = copy / "personalive" / "pose_guider.pth"
    state = torch.load(target, weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[key].view(-1)[3] = float("nan")
    torch.save(state, target)
    result = run("weights", "check", copy)
    assert result.exit_code == 2
    assert f"pose_guider.pth: {key} holds 1 non-finite values (NaN or inf)" in error_line(result)

    ref = tmp_path / "face.png"
    Image.fromarray(np.full((80, 80, 3), 120, np.uint8)).save(ref)
    drive = make_video(tmp_path / "d.mp4", frames=2)
    size = ["--set", "generation.height=64", "--set", "generation.width=64", "--dtype", "fp32", "--device", "cpu"]
    result = run("animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", "--weights", copy, *size)
    assert result.exit_code == 2, result.output
    assert f"pose_guider.pth: {key} holds 1 non-finite values" in error_line(result)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "junk",
    [{"block_out_channels": "junk"}, {"down_block_types": 5}, {}],
)
def test_junk_unet_config_names_that_file(copy, junk):
    config = copy / "sd-image-variations-diffusers" / "unet" / "config.json"
    data = json.loads(config.read_text())
    data.update(junk) if junk else data.clear()
    config.write_text(json.dumps(data))
    result = run("weights", "check", copy)
    assert result.exit_code == 2
    line = error_line(result)
    assert "unet/config.json" in line and "personalive/config.json" not in line
