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
    out = load_reference(path, min_side=1)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() <= tol


def test_exif_orientation(tmp_path):
    rgb = _rgb()
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    out = load_reference(path, min_side=1)
    assert out.shape == (30, 40, 3)
    assert np.abs(out.astype(int) - np.rot90(rgb, k=-1)).mean() < 12


def test_rgba_and_la_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:4, :, 3] = 255  # top opaque, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_reference(tmp_path / "a.png", min_side=1)
    assert (out[:4] == (10, 20, 30)).all() and (out[4:] == 255).all()
    la = np.stack([np.full((8, 8), 50, np.uint8), rgba[..., 3]], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_reference(tmp_path / "la.png", min_side=1)
    assert (out[:4] == 50).all() and (out[4:] == 255).all()


def test_palette_gray_and_16bit(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    out = load_reference(tmp_path / "p.png", min_side=1)
    assert out.shape == (40, 30, 3) and np.abs(out.astype(int) - rgb).mean() < 10

    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_reference(tmp_path / "g.png", min_side=1)
    assert out.shape == (8, 8, 3) and (out == gray[..., None]).all()

    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_reference(tmp_path / "g16.png", min_side=1)
    assert (out[..., 0] == np.round(deep / 65535 * 255)).all() and (out[..., 0] == out[..., 2]).all()


def test_video_as_reference_takes_first_frame(tmp_path):
    path = make_video(tmp_path / "ref.mp4", frames=3, width=48, height=64)
    out = load_reference(path, min_side=1)
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


def _png_declaring(path, width: int, height: int) -> None:
    """A few-byte PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_is_an_input_error(tmp_path):
    _png_declaring(tmp_path / "bomb.png", 40000, 40000)
    with pytest.raises(InputError, match=r"bomb.png: reference image is too large to decode safely \(Image size"):
        load_reference(tmp_path / "bomb.png")


def test_minimum_reference_size(tmp_path):
    for w, h in [(1, 1), (63, 200), (200, 63)]:
        Image.fromarray(_rgb(h, w)).save(tmp_path / "small.png")
        with pytest.raises(InputError, match=f"small.png: reference image is {w}x{h} pixels, too small .* 64x64"):
            load_reference(tmp_path / "small.png")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "ok.png")
    assert load_reference(tmp_path / "ok.png").shape == (64, 64, 3)
    make_video(tmp_path / "tiny.mp4", frames=2, width=32, height=32)  # a video's first frame is held to it too
    with pytest.raises(InputError, match="tiny.mp4: reference image is 32x32 pixels"):
        load_reference(tmp_path / "tiny.mp4")


def test_names_with_a_newline_stay_on_one_line(tmp_path):
    odd = tmp_path / "a\nb.png"
    with pytest.raises(InputError) as info:
        load_reference(odd)
    assert "\n" not in str(info.value) and str(info.value).startswith(repr(str(odd)) + ": reference image not found")
    odd.write_text("not an image")
    with pytest.raises(InputError) as info:
        load_reference(odd)
    assert "\n" not in str(info.value)
