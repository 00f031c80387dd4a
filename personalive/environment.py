"""What this machine has: package versions, CUDA devices, optional backends. Also device/dtype resolution."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

from personalive._optional import is_available
from personalive.errors import DeviceError

# module -> the distributions that install it (the first one installed is reported)
_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "diffusers": ("diffusers",),
    "transformers": ("transformers",),
    "av": ("av",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-lean"),
    "numpy": ("numpy",),
}


def package_version(name: str) -> str | None:
    """The installed version of module ``name``, or None. Read from the package's metadata, not by importing it:
    every job's report lists these, and importing onnx (ml_dtypes) and onnxruntime took ~2 s at the end of each
    `animate` on a 2-core machine (~0.3 s on the H200's host). A module already imported reports its own
    ``__version__`` (torch's carries its CUDA tag)."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__version__", None):
        return str(module.__version__)
    for distribution in _PACKAGES.get(name, (name,)):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    from personalive import __version__

    out["personalive"] = __version__
    for name in _PACKAGES:
        out[name] = package_version(name)
    return out


def cuda_devices() -> list[dict]:
    import torch

    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {
                    "index": i,
                    "name": props.name,
                    "compute_capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                }
            )
    return devices


def describe() -> list[str]:
    lines = [f"{name:<13}{version or 'not installed'}" for name, version in versions().items()]
    devices = cuda_devices()
    if devices:
        for d in devices:
            cc, mem = d["compute_capability"], d["memory_gib"]
            lines.append(f"cuda:{d['index']:<8}{d['name']} (compute capability {cc}, {mem} GiB)")
    else:
        lines.append("cuda         no CUDA device visible")
    lines.append(f"tensorrt     {'imports' if is_available('tensorrt') else 'does not import'}")
    lines.append(f"onnxruntime  {'imports' if is_available('onnxruntime') else 'does not import'}")
    return lines


def resolve_device(name: str | None):
    """'auto'/None -> cuda:0 when available, else cpu; a CUDA device without a GPU is a clear error."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"--device {name!r}: not a device name (use cuda, cuda:N or cpu)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: no CUDA GPU is visible on this machine (use --device cpu)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise DeviceError(f"--device {name}: unsupported device type {device.type!r} (use cuda, cuda:N or cpu)")
    return device


def apply_cudnn_setting(device, cudnn_benchmark: bool) -> None:
    """``runtime.cudnn_benchmark`` on a CUDA device (a process-wide torch flag), before the first convolution."""
    if device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = cudnn_benchmark


def torch_dtype(name: str):
    import torch

    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if name not in table:
        raise DeviceError(f"dtype {name!r}: expected one of fp16, bf16, fp32")
    return table[name]
