"""Weight contents: archive CRCs (full and cheap), non-finite values, whole-content hash with its cache."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from personalive.errors import WeightsError
from personalive.weights import integrity as wi


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIVE_CACHE_DIR", str(tmp_path / "cache"))


def _saved(tmp_path: Path, name: str = "w.pth", **extra) -> Path:
    generator = torch.Generator().manual_seed(0)
    state = {"a.weight": torch.randn(64, 64, generator=generator), "a.bias": torch.randn(64, generator=generator)}
    state.update(extra)
    path = tmp_path / name
    torch.save(state, path)
    return path


def _data_offset(path: Path, member_suffix: str) -> tuple[str, int, int]:
    """(member name, offset of its data in the file, data size) of the first member ending in ``member_suffix``."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.filename, info.header_offset + 30 + name_len + extra_len, info.file_size


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # lowest mantissa bit of a float: the value stays finite and plausible
    path.write_bytes(bytes(data))


def test_verify_archive_finds_a_flipped_byte_that_torch_load_accepts(tmp_path):
    path = _saved(tmp_path)
    assert wi.verify_archive(path) == []
    name, offset, size = _data_offset(path, "data/0")
    _flip(path, offset + size // 2)
    state = torch.load(path, weights_only=True)  # loads without complaint: shapes and keys are fine
    assert torch.isfinite(state["a.weight"]).all()
    [problem] = wi.verify_archive(path)
    assert problem.startswith(f"{path}: member {name} is corrupt (Bad CRC-32")
    # the cheap path at load checks only small members; a big tensor's bytes are left to `weights check`
    wi.check_archive_structure(path, small=0)
    with pytest.raises(WeightsError, match=f"member {name} is corrupt"):
        wi.check_archive_structure(path)


def test_cheap_check_catches_damaged_structure_and_truncation(tmp_path):
    path = _saved(tmp_path)
    wi.check_archive_structure(path)
    _name, offset, _size = _data_offset(path, "data.pkl")
    _flip(path, offset + 3)
    with pytest.raises(WeightsError, match=r"w.pth: member .*data.pkl is corrupt"):
        wi.check_archive_structure(path)
    cut = _saved(tmp_path, "cut.pth")
    data = cut.read_bytes()
    _n, offset, size = _data_offset(cut, "data/0")
    # keep the central directory (at the end) but cut bytes out of the middle: members run past the end
    cut.write_bytes(data[: offset + size // 2] + data[offset + size :][-200:])
    with pytest.raises(WeightsError, match="cut.pth: "):
        wi.check_archive_structure(cut)


def test_files_that_are_not_zip_archives_are_left_to_their_reader(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"x": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    assert wi.verify_archive(legacy) == [] and wi.check_archive_structure(legacy) is None


def test_non_finite_weights_name_file_and_key(tmp_path):
    bad = torch.ones(4, 4)
    bad[1, 2] = float("nan")
    bad[3, 3] = float("inf")
    path = _saved(tmp_path, **{"b.weight": bad})
    state = torch.load(path, weights_only=True)
    assert wi.nonfinite_tensors(state) == [("b.weight", 2, 16)]
    with pytest.raises(WeightsError, match=r"w.pth: b.weight holds 2 non-finite values \(NaN or inf\) of 16"):
        wi.check_finite(state, path)
    other = tmp_path / "other.pth"
    with pytest.raises(WeightsError, match="other.pth: b.weight holds"):
        wi.check_finite(state, {"a.weight": path, "a.bias": path, "b.weight": other})
    wi.check_finite({"ints": torch.arange(3), "fine": torch.zeros(2)}, path)


def test_content_hash_covers_every_byte_and_is_cached(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    big = root / "big.bin"
    big.write_bytes(os.urandom(3 << 20))  # 3 MiB: the old hash read only the first and last MiB
    small = root / "small.json"
    small.write_text("{}")
    files = [small, big, root / "missing.bin"]
    first = wi.content_hash(root, files)
    reads: list[Path] = []
    real = wi.file_sha256
    monkeypatch.setattr(wi, "file_sha256", lambda p: reads.append(p) or real(p))
    assert wi.content_hash(root, files) == first and reads == []  # both digests from the cache
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stat = big.stat()
    big.write_bytes(bytes(data))
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the mtime put back
    second = wi.content_hash(root, files)
    assert second != first and reads == [big]
    assert wi.content_hash(root, files, use_cache=False) == second
    # the cache is a file beside nothing of the weights, keyed by resolved path
    assert (tmp_path / "cache" / wi.CACHE_FILE).is_file()
    (tmp_path / "cache" / wi.CACHE_FILE).write_text("not json")  # a damaged cache is rebuilt
    assert wi.content_hash(root, files) == second
