"""Reference image loading: formats, EXIF orientation, modes, video as reference, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from personalive.errors import InputError
from personalive.media.reference import load_reference

from .synth import frame_pattern, make_video


def _rgb(h=40, w=30) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.zeros((h, w, 3), np.uint8)
    base[: h // 2] = (200, 30, 30)  # red top half tells the orientation
    base[h // 2 :] = (20, 40, 220)
    return np.clip(base.astype(int) + rng.integers(-5, 5, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("suffix", "tol"), [(".png", 0), (".bmp", 0), (".webp", 0), (".jpg", 12)])
def test_formats(tmp_path, suffix, tol):
    rgb = _rgb()
    path = tmp_path / f"ref{suffix}"
    kwargs = {"lossless": True} if suffix == ".webp" else {"quality": 95} if suffix == ".jpg" else {}
    Image.fromarray(rgb).save(path, **kwargs)
    out = load_reference(path)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() <= tol


def test_exif_orientation(tmp_path):
    rgb = _rgb()
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    out = load_reference(path)
    assert out.shape == (30, 40, 3)
    assert np.abs(out.astype(int) - np.rot90(rgb, k=-1)).mean() < 12


def test_rgba_and_la_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:4, :, 3] = 255  # top opaque, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_reference(tmp_path / "a.png")
    assert (out[:4] == (10, 20, 30)).all() and (out[4:] == 255).all()
    la = np.stack([np.full((8, 8), 50, np.uint8), rgba[..., 3]], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_reference(tmp_path / "la.png")
    assert (out[:4] == 50).all() and (out[4:] == 255).all()


def test_palette_gray_and_16bit(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    out = load_reference(tmp_path / "p.png")
    assert out.shape == (40, 30, 3) and np.abs(out.astype(int) - rgb).mean() < 10

    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_reference(tmp_path / "g.png")
    assert out.shape == (8, 8, 3) and (out == gray[..., None]).all()

    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_reference(tmp_path / "g16.png")
    assert (out[..., 0] == np.round(deep / 65535 * 255)).all() and (out[..., 0] == out[..., 2]).all()


def test_video_as_reference_takes_first_frame(tmp_path):
    path = make_video(tmp_path / "ref.mp4", frames=3, width=48, height=64)
    out = load_reference(path)
    assert out.shape == (64, 48, 3)
    assert np.abs(out.astype(int) - frame_pattern(0, 48, 64)).mean() < 8


def test_bad_references(tmp_path):
    with pytest.raises(InputError, match="missing.png: reference image not found"):
        load_reference(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png: reference image is an empty file"):
        load_reference(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("hello, not an image\n" * 20)
    with pytest.raises(InputError, match=r"notes.png: reference is neither an image .* nor a readable video"):
        load_reference(tmp_path / "notes.png")
    good = tmp_path / "cut.png"
    Image.fromarray(_rgb(200, 200)).save(good)
    good.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputError, match="cut.png: reference image is damaged or unreadable"):
        load_reference(good)
