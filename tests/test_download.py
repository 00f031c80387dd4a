"""`personalive weights download` against a local Hugging Face cache: the real hf_hub_download path, never the network.

The tests build the Hub's cache structure by hand (models--<org>--<name>/{blobs, snapshots/<commit>, refs/main}),
switch the Hub off (HF_HUB_OFFLINE=1 / offline=True) and check the official layout that comes out of it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from personalive import download
from personalive.errors import DownloadError, WeightsError

COMMIT = "0123456789abcdef0123456789abcdef01234567"

# The official layout, written out independently of download.OFFICIAL_FILES (upstream README / download_weights.py).
LAYOUT = {
    "personalive/denoising_unet.pth": ("huaichang/PersonaLive", "pretrained_weights/personalive/denoising_unet.pth"),
    "personalive/motion_encoder.pth": ("huaichang/PersonaLive", "pretrained_weights/personalive/motion_encoder.pth"),
    "personalive/motion_extractor.pth": (
        "huaichang/PersonaLive",
        "pretrained_weights/personalive/motion_extractor.pth",
    ),
    "personalive/pose_guider.pth": ("huaichang/PersonaLive", "pretrained_weights/personalive/pose_guider.pth"),
    "personalive/reference_unet.pth": ("huaichang/PersonaLive", "pretrained_weights/personalive/reference_unet.pth"),
    "personalive/temporal_module.pth": ("huaichang/PersonaLive", "pretrained_weights/personalive/temporal_module.pth"),
    "sd-image-variations-diffusers/model_index.json": ("lambdalabs/sd-image-variations-diffusers", "model_index.json"),
    "sd-image-variations-diffusers/unet/config.json": ("lambdalabs/sd-image-variations-diffusers", "unet/config.json"),
    "sd-image-variations-diffusers/unet/diffusion_pytorch_model.bin": (
        "lambdalabs/sd-image-variations-diffusers",
        "unet/diffusion_pytorch_model.bin",
    ),
    "sd-image-variations-diffusers/image_encoder/config.json": (
        "lambdalabs/sd-image-variations-diffusers",
        "image_encoder/config.json",
    ),
    "sd-image-variations-diffusers/image_encoder/pytorch_model.bin": (
        "lambdalabs/sd-image-variations-diffusers",
        "image_encoder/pytorch_model.bin",
    ),
    "sd-vae-ft-mse/config.json": ("stabilityai/sd-vae-ft-mse", "config.json"),
    "sd-vae-ft-mse/diffusion_pytorch_model.bin": ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.bin"),
    # the tiny autoencoder of model.decoder=taesd (upstream's vae_tiny_path)
    "taesd/config.json": ("madebyollin/taesd", "config.json"),
    "taesd/diffusion_pytorch_model.safetensors": ("madebyollin/taesd", "diffusion_pytorch_model.safetensors"),
}


def fill_hub_cache(cache: Path, contents: dict[tuple[str, str], bytes], commit: str = COMMIT) -> None:
    """Write files into a Hub cache folder the way hf_hub_download leaves them (blobs + snapshot symlinks)."""
    for (repo_id, filename), data in contents.items():
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)


def fake_contents() -> dict[tuple[str, str], bytes]:
    """Small distinct bytes per Hub file (sizes differ so that a size check can tell them apart)."""
    return {source: f"{target}\n".encode() * (i + 1) for i, (target, source) in enumerate(sorted(LAYOUT.items()))}


def test_official_files_match_the_official_layout():
    assert {f.target: (f.repo_id, f.filename) for f in download.OFFICIAL_FILES} == LAYOUT


def test_download_from_offline_cache_builds_the_layout(tmp_path):
    cache, root = tmp_path / "hub", tmp_path / "weights"
    contents = fake_contents()
    fill_hub_cache(cache, contents)

    paths = download.download_weights(root, cache_dir=cache, offline=True, check=False)

    assert sorted(p.relative_to(root).as_posix() for p in paths) == sorted(LAYOUT)
    for target, source in LAYOUT.items():
        path = root / target
        assert path.is_file() and not path.is_symlink()
        assert path.read_bytes() == contents[source]
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == sorted(LAYOUT)  # no .part leftovers, nothing else


def test_second_run_keeps_right_sized_files_and_refetches_wrong_sized_ones(tmp_path):
    cache, root = tmp_path / "hub", tmp_path / "weights"
    contents = fake_contents()
    fill_hub_cache(cache, contents)
    download.download_weights(root, cache_dir=cache, offline=True, check=False)

    kept = root / "personalive/pose_guider.pth"  # same size, other bytes: counts as present, left alone
    kept_bytes = b"x" * kept.stat().st_size
    kept.unlink()
    kept.write_bytes(kept_bytes)
    truncated = root / "sd-vae-ft-mse/diffusion_pytorch_model.bin"  # an interrupted copy: fetched again
    truncated.unlink()
    truncated.write_bytes(b"partial")
    missing = root / "sd-image-variations-diffusers/unet/config.json"
    missing.unlink()

    download.download_weights(root, cache_dir=cache, offline=True, check=False)

    assert kept.read_bytes() == kept_bytes
    assert truncated.read_bytes() == contents[LAYOUT["sd-vae-ft-mse/diffusion_pytorch_model.bin"]]
    assert missing.read_bytes() == contents[LAYOUT["sd-image-variations-diffusers/unet/config.json"]]


def test_present_files_need_no_cache_when_offline(tmp_path):
    root = tmp_path / "weights"
    for target in LAYOUT:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / target).write_bytes(b"mine")
    download.download_weights(root, cache_dir=tmp_path / "empty-hub", offline=True, check=False)
    assert all((root / target).read_bytes() == b"mine" for target in LAYOUT)


def test_offline_with_nothing_cached_names_repo_file_and_fixes(tmp_path):
    with pytest.raises(DownloadError) as info:
        download.download_weights(tmp_path / "weights", cache_dir=tmp_path / "empty-hub", offline=True, check=False)
    message = str(info.value)
    assert "\n" not in message
    assert "huaichang/PersonaLive/pretrained_weights/personalive/denoising_unet.pth" in message
    for hint in ("HF_HUB_OFFLINE", "HF_HOME", "network", "https://huggingface.co/huaichang/PersonaLive"):
        assert hint in message
    assert isinstance(info.value, WeightsError) and info.value.exit_code == 1


def test_partial_cache_fails_on_the_first_missing_file(tmp_path):
    cache = tmp_path / "hub"
    contents = fake_contents()
    del contents[LAYOUT["sd-vae-ft-mse/config.json"]]
    fill_hub_cache(cache, contents)
    with pytest.raises(DownloadError, match=r"stabilityai/sd-vae-ft-mse/config\.json@main: not in the Hugging Face"):
        download.download_weights(tmp_path / "weights", cache_dir=cache, offline=True, check=False)
    # everything before it is in place: a later run resumes from there
    assert (tmp_path / "weights/personalive/denoising_unet.pth").is_file()


def test_hub_offline_reads_the_environment_now(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download.hub_offline()


# ---------------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PERSONALIVE_"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "personalive.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_offline_with_nothing_cached_exits_1_with_one_clear_line(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = _cli(["weights", "download", str(tmp_path / "weights")], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "huaichang/PersonaLive/pretrained_weights/personalive/denoising_unet.pth" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr
    assert str(tmp_path / "hf" / "hub") in result.stderr.replace("\n", "")


def test_cli_downloads_from_hf_home_cache_into_personalive_weights(tmp_path):
    """No DIR: the target is $PERSONALIVE_WEIGHTS; the cache is $HF_HOME/hub; then the weights check runs."""
    from personalive import weights

    fill_hub_cache(tmp_path / "hf" / "hub", fake_contents())
    root = tmp_path / "target"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PERSONALIVE_WEIGHTS": str(root)}
    result = _cli(["weights", "download"], env, tmp_path)

    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == sorted(LAYOUT)
    if hasattr(weights, "check_layout"):
        # the fake files are not checkpoints: the check runs and rejects them as a weights problem
        assert result.returncode == WeightsError.exit_code, result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "unchecked" in result.stderr


@pytest.mark.oracle
def test_download_of_a_real_tiny_layout_passes_the_weights_check(tmp_path, oracle_dir, caplog):
    """The Hub cache holds the oracle's tiny checkpoints (written by upstream's own modules): fetch, check, pass."""
    from personalive import weights

    if not hasattr(weights, "check_layout"):
        pytest.skip("this build has no weights check yet")
    from personalive.models.taesd import write_random_taesd

    source = tmp_path / "source"
    shutil.copytree(oracle_dir / "pretrained_weights", source)
    # the optional tiny decoder (model.decoder=taesd) is not part of upstream's release: our own random one
    write_random_taesd(source / "taesd", "tiny", seed=0)
    cache = tmp_path / "hub"
    fill_hub_cache(cache, {hub: (source / target).read_bytes() for target, hub in LAYOUT.items()})
    root = tmp_path / "weights"
    root.mkdir()
    # the release has no sizes file; a tiny layout needs its own (here the oracle's), already in the folder
    (root / "oracle_config.json").write_bytes((source / "oracle_config.json").read_bytes())

    with caplog.at_level("INFO", logger="personalive"):
        download.download_weights(root, cache_dir=cache, offline=True)  # check=True: raises on any problem

    for target in LAYOUT:
        assert (root / target).read_bytes() == (source / target).read_bytes()
    assert any("weights hash" in r.getMessage() for r in caplog.records)  # logged by the check once it passed
