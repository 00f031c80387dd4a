"""Where --backend compile keeps inductor's caches, and that `personalive info` says so."""

from __future__ import annotations

import os

from typer.testing import CliRunner

from personalive import compile_cache
from personalive.cli import app


def test_cache_folder_follows_the_user_cache_and_the_overrides(tmp_path, monkeypatch):
    for name in ("PERSONALIVE_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.compile_cache_dir() == (tmp_path / "xdg" / "personalive" / "compile", "personalive default")
    monkeypatch.setenv("PERSONALIVE_CACHE_DIR", str(tmp_path / "mine"))
    folder = compile_cache.use_compile_cache()
    assert folder == tmp_path / "mine" / "compile" and folder.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)  # what inductor reads when it compiles
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "users"))  # the user's own setting wins
    assert compile_cache.compile_cache_dir() == (tmp_path / "users", "TORCHINDUCTOR_CACHE_DIR")


def test_info_prints_the_compile_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("PERSONALIVE_CACHE_DIR", str(tmp_path))
    (tmp_path / "compile").mkdir()
    (tmp_path / "compile" / "kernel.bin").write_bytes(b"x" * 3_000_000)
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0
    assert f"compile cache {tmp_path / 'compile'} (personalive default; 3 MB)" in result.output.replace("\n", "")


def test_info_prints_the_plan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIVE_CACHE_DIR", str(tmp_path))
    (tmp_path / "plans").mkdir()
    for name in ("a.json", "b.json"):
        (tmp_path / "plans" / name).write_text("x" * 2000)
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0
    assert f"plan cache {tmp_path / 'plans'} (2 plan books, 4 kB)" in result.output.replace("\n", "")
