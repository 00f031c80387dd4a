"""The one place that imports optional packages (tensorrt, onnxruntime); errors name the pip extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from personalive.errors import MissingDependencyError

_HINTS = {
    "tensorrt": "TensorRT is not installed: install it with `pip install 'personalive[tensorrt]'` "
    "(needs an NVIDIA GPU and driver; see the README's GPU section)",
    "onnxruntime": "onnxruntime is not installed: install it with `pip install 'personalive[dev]'` "
    "or `pip install onnxruntime`",
}


def is_available(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def import_optional(name: str) -> ModuleType:
    """Import an optional package or raise MissingDependencyError with the install hint."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(f"{_HINTS.get(name, f'{name} is not installed')} ({exc})") from exc


def tensorrt() -> ModuleType:
    return import_optional("tensorrt")


def onnxruntime() -> ModuleType:
    return import_optional("onnxruntime")
