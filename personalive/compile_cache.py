"""Where torch.compile keeps what it compiled, so that a second process starts without compiling again.

inductor caches compiled graphs (FX graph cache), autotuning results and Triton kernels on disk, by default in
``/tmp/torchinductor_<user>``, which is lost on reboot and shared with every other program. ``--backend compile``
points it at ``<user cache folder>/personalive/compile`` (``$XDG_CACHE_HOME`` or ``~/.cache``), or at
``PERSONALIVE_CACHE_DIR/compile`` when that is set. A ``TORCHINDUCTOR_CACHE_DIR`` set by the user wins.
``personalive info`` prints the folder in use. inductor writes its own default back into that variable the first
time it looks (even ``personalive info`` can trigger it), so a value equal to inductor's default counts as unset.
"""

from __future__ import annotations

import os
from pathlib import Path

INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"


def user_cache_dir() -> Path:
    """``PERSONALIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/personalive``, else ``~/.cache/personalive``."""
    if os.environ.get("PERSONALIVE_CACHE_DIR"):
        return Path(os.environ["PERSONALIVE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "personalive"


def _inductor_default() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: then any value counts as the user's
        return None
    return os.path.abspath(default_cache_dir())


def compile_cache_dir() -> tuple[Path, str]:
    """(folder inductor uses for its caches, where that choice came from)."""
    value = os.environ.get(INDUCTOR_ENV)
    if value and os.path.abspath(value) != _inductor_default():
        return Path(value), INDUCTOR_ENV
    return user_cache_dir() / "compile", "personalive default"


def use_compile_cache() -> Path:
    """Point inductor at :func:`compile_cache_dir` (before the first compilation; inductor reads it lazily)."""
    folder, _ = compile_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_ENV] = str(folder)
    return folder


def describe_compile_cache() -> str:
    folder, source = compile_cache_dir()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    return f"{folder} ({source}; {size / 1e6:.0f} MB)"
