"""The window step precompiled ahead of time: ``--backend compile`` without dynamo's tracing at start.

Why: a second process of ``--backend compile`` with warm inductor caches still spends 18-27 s tracing the
networks with dynamo before its first window (calls AT and AV on an H200's host); issue 15 asks for a warm start
<= 30 s. PyTorch's ``torch.compile(fn, fullgraph=True).aot_compile(example)`` (experimental) traces and compiles
once and saves the compiled function with its guards; ``torch.compiler.load_compiled_function`` loads it in
another process without tracing (on the 2-core CPU, tiny weights: 12.5 s to load against 450 s to compile).

``personalive build-engine --format precompiled`` compiles ``WindowStepModule.forward`` as one graph, inductor's
default mode, with the module passed as its first argument: the weights are inputs of the graph, not part of the
file. The reference features' token axis is dynamic, so one file serves every keyframe count (compiled on a
window with 0 keyframes). ``--backend compile`` uses the file when it finds one for the run (or is given
``--engine FILE``), else compiles as before; ``verify-engine`` checks it like any engine.

What the file holds and what it depends on:

* the guards record each input's dispatch keys and strides as traced: the step is compiled and called under
  ``no_grad`` with contiguous inference tensors (the job's inputs are inference tensors; slices and other tensors
  are copied); the guard on the process's global state (which includes its number of CPU threads) is dropped, so
  a job pinned to other cores than the build's runs the file;
* dynamo cannot serialise guards on object identity (the code of the networks' methods, global functions such as
  ``ddim_step``, classes), and guards on other modules' globals are saved under names a new process lacks: both
  are dropped (as dynamo's default filter for ``aot_compile`` does), so the file is valid for the code it was
  compiled from only. The sidecar pins it: Python, torch, diffusers, and a hash of this package's
  sources, beside what every engine pins (device, GPU, weights, config, precision, keyframes);
* dynamo's guards on the module itself (~31,000 on the step's networks: hooks empty, attributes equal or absent,
  types, each parameter's layout) are dropped but for the dict-key ones it needs to rebuild the rest: they were 40 %
  of a load (tiny networks, CPU: 5.1 -> 3.1 s) and guard what the sidecar pins (the module is built by these
  sources from those weights and that config, as every engine's is). What they checked of the tensors is checked
  once at load instead: every parameter's and buffer's shape, strides, dtype and device against the sidecar's
  fingerprint (``module_layout``); inductor asserts each graph input's size and strides on every call;
* the guards on the inputs (shapes, strides, dtypes, devices, dispatch keys) stay: a call whose inputs differ is
  refused with the guard that failed, never run wrong.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from personalive.backends import artifacts, torch_artifacts
from personalive.backends.eager import EagerWindowStep
from personalive.errors import EngineMismatchError, InputError, MissingDependencyError, PersonaLiveError
from personalive.pipeline.window import OUTPUT_NAMES, WindowStepModule, build_window_module

log = logging.getLogger(__name__)

SUFFIX = ".ptstep"
KIND = "precompiled"

# the guard kinds dynamo cannot serialise (torch 2.13's CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES)
IDENTITY_GUARDS = frozenset(
    {
        "DICT_VERSION",
        "NN_MODULE",
        "ID_MATCH",
        "FUNCTION_MATCH",
        "CLASS_MATCH",
        "MODULE_MATCH",
        "CLOSURE_MATCH",
        "WEAKREF_ALIVE",
    }
)


class PrecompileError(PersonaLiveError):
    """A precompiled step could not be built or loaded."""


def check_supported() -> None:
    """Raise when this PyTorch has no ahead-of-time ``torch.compile`` (experimental; 2.13 has it)."""
    if not hasattr(torch.compiler, "load_compiled_function"):
        raise MissingDependencyError(
            f"torch {torch.__version__} cannot precompile the window step (no torch.compiler.load_compiled_function); "
            "use --format compile-cache or a newer torch"
        )


# dynamo's one guard on the process's global state (grad mode, autocast, deterministic algorithms, the number of
# CPU threads, the default dtype): call AX refused a step built under `taskset -c 0-7` in a process with 16 threads.
# None of it changes what the compiled graph computes (it is fixed when traced), and `call` runs it under no_grad.
PROCESS_STATE_GUARDS = frozenset({"GLOBAL_STATE"})


# the compiled function's first argument, the module (``WindowStepModule.forward``'s ``self``): guards on what is
# reached from it are the module's own (see the module docstring), but for these, which dynamo rebuilds the others
# from at load (without them the module is missing from the saved scope and the load fails)
MODULE_ARGUMENT = "self"
MODULE_GUARDS_KEPT = frozenset({"DICT_KEYS_MATCH"})


def keep_serializable(entries: Sequence[Any]) -> list[bool]:
    """dynamo's guard filter: keep every guard but those on object identity, on globals (see the module
    docstring; a global of another module is saved under a name of this process's, which a new one lacks), on
    the process's global state, and on the module argument but its dict keys."""
    dropped = IDENTITY_GUARDS | PROCESS_STATE_GUARDS
    return [
        not (
            getattr(e, "is_global", False)
            or {e.guard_type, *(e.derived_guard_types or ())} & dropped
            or (on_module(e.name) and e.guard_type not in MODULE_GUARDS_KEPT)
        )
        for e in entries
    ]


def on_module(source: str) -> bool:
    """Whether a guard's source is reached from the module argument (``self._modules['vae']...``,
    ``dict(type(self._modules[...]).__dict__)...``)."""
    return re.search(rf"(?<![\w.'\"]){MODULE_ARGUMENT}(?=$|[.\[)])", source) is not None


def module_layout(module: torch.nn.Module) -> str:
    """sha256 of every parameter's and buffer's name, shape, strides, dtype and device, and of which submodules
    are in training mode: what the dropped guards on the module checked of it, checked once per load."""
    digest = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.stride()} {tensor.dtype} {tensor.device}\n".encode())
    for name, sub in module.named_modules():
        if sub.training:
            digest.update(f"training {name}\n".encode())
    return digest.hexdigest()


def check_layout(module: torch.nn.Module, built: str | None, path: Path, rebuild: str) -> None:
    """Refuse a module whose tensors are laid out unlike those the file was compiled for."""
    if module_layout(module) != built:
        raise EngineMismatchError(
            f"{path}: the networks' parameters differ from those it was compiled for (shapes, strides, dtypes or "
            f"devices); rebuild with `{rebuild}`"
        )


def precompile(forward: Callable, args: tuple, dynamic: Sequence[tuple[int, int]] = ()) -> Any:
    """``forward(*args)`` compiled ahead of time as one graph; each ``(i, dim)`` of ``dynamic``: size ``dim`` of
    ``args[i]`` dynamic (marked on a copy: a loaded function refuses tensors marked at call time).

    Under ``no_grad``: the step is traced without autograd (``call`` runs it so)."""
    check_supported()
    with _aot_compile_enabled():
        compiled = torch.compile(
            forward, fullgraph=True, dynamic=False, options={"guard_filter_fn": keep_serializable}
        )
    args = list(args)
    for i, dim in dynamic:
        args[i] = _copy(args[i])
        torch._dynamo.mark_dynamic(args[i], dim)
    with torch.no_grad():
        return compiled.aot_compile((tuple(args), {}))


def _aot_compile_enabled():
    """torch 2.11 gives ``torch.compile``'s result an ``aot_compile`` only under this dynamo switch (2.13 always)."""
    import contextlib

    if hasattr(torch._dynamo.config, "enable_aot_compile"):
        return torch._dynamo.config.patch(enable_aot_compile=True)
    return contextlib.nullcontext()


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_inference():
        with torch.inference_mode():
            return tensor.clone()
    return tensor.clone()


def save(compiled: Any, path: Path) -> int:
    """Write ``compiled`` to ``path`` atomically; its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        compiled.save_compiled_function(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def load(path: Path, f_globals: dict[str, Any]) -> Any:
    """The compiled function in ``path``; ``f_globals``: the globals of the module that defined it (its code and
    its guards read them)."""
    check_supported()
    t0 = time.perf_counter()
    try:
        with Path(path).open("rb") as f:
            compiled = torch.compiler.load_compiled_function(f, f_globals=f_globals)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged file, or one written by another torch or Python
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise PrecompileError(f"{path}: not a precompiled step this torch can load ({reason}); rebuild it") from exc
    log.info("precompiled step %s loaded in %.1f s", path, time.perf_counter() - t0)
    return compiled


def call(compiled: Any, args: tuple, path: Path | str, rebuild: str) -> Any:
    """``compiled(*args)`` under ``no_grad`` and outside ``inference_mode`` (the stream runs in it, and the guards
    on dispatch keys see its thread-local state: as traced, or refused); a failed guard (inputs unlike the compiled
    ones) or size assert (a parameter re-laid since) is an EngineMismatchError naming it, not a traceback."""
    try:
        with torch.inference_mode(False), torch.no_grad():
            return compiled(*args)
    except RuntimeError as exc:
        if "GuardManager check failed" not in str(exc):
            raise
        reason = failed_guard(exc)
    except AssertionError as exc:  # inductor's check of a graph input's size and strides (parameters included)
        if "expected size" not in str(exc):
            raise
        reason = str(exc).splitlines()[0][:240]
    raise EngineMismatchError(f"{path}: the precompiled step refuses this call ({reason}); rebuild with `{rebuild}`")


def failed_guard(exc: BaseException) -> str:
    """The first failed guard's text in dynamo's guard error (the whole message, shortened, if it has none)."""
    text = " ".join(str(exc).split())
    found = re.search(r"verbose_code_parts=\[\s*(['\"])(.*?)\1\s*[,\]]", text)
    return (found.group(2) if found else text)[:240]


def as_traced(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as the traced inputs were, copied where it is not: an inference tensor (the guards record the
    dispatch keys) and contiguous (they record the strides: the job feeds back slices of the last window's
    outputs, e.g. ``pose_all[:, :, W:]``, which the compile backend would recompile for and this file refuses)."""
    if tensor.is_inference() and tensor.stride() == dense_strides(tensor.shape):
        return tensor
    with torch.inference_mode():
        return tensor.clone(memory_format=torch.contiguous_format)


def dense_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """A fresh contiguous tensor's strides. Not ``is_contiguous()``, which ignores the strides of size-1 axes: the
    guards do not (verify-engine's draws are slices of a batch, e.g. ``pose`` of shape (1, ...) with the batch's
    stride)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


# --------------------------------------------------------------------------------------- what a file depends on


def source_hash(root: Path | None = None) -> str:
    """sha256 of the Python sources under ``root`` (names and bytes; default: this package's), the code the
    dropped identity guards stood for."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_facts() -> dict[str, str]:
    """What the compiled code was traced from, beyond torch: Python, diffusers, and this package's sources."""
    try:
        diffusers = metadata.version("diffusers")
    except metadata.PackageNotFoundError:
        diffusers = "none"
    return {
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "diffusers_version": diffusers,
        "source_hash": source_hash(),
    }


def default_step_path(engine_dir: str | Path, weights_hash: str, subset: dict, precision: str, k: int, facts: dict):
    """``engines/<stem>-<sm90|cpu>-torch<version>-py<version>.ptstep``; used by build-engine and the lookup."""
    python = f"-py{sys.version_info.major}{sys.version_info.minor}"
    return torch_artifacts.artifact_path(engine_dir, weights_hash, subset, precision, k, facts, python + SUFFIX)


def rebuild_command(config: Any, k: int) -> str:

    return torch_artifacts.rebuild_command(config, k, KIND)


def build_step(models: Any, config: Any, path: Path, *, precision: str, k: int, device, build_command: str):
    """Compile the window step of ``models`` (in ``precision`` on ``device``) and write it to ``path``; returns
    the sidecar (not yet written)."""
    from personalive.backends.onnx import window_step_io
    from personalive.environment import torch_dtype
    from personalive.pipeline.window import example_window_inputs

    check_supported()
    module = build_window_module(models, config).eval()
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.inference_mode():  # the job's inputs are inference tensors; the guards record that
        example = example_window_inputs(models, config, device, torch_dtype(precision), 0, generator)
    example = {name: as_traced(tensor) for name, tensor in example.items()}  # dense strides, as every call gets
    args = (module, *(example[n] for n in module.input_names))
    t0 = time.perf_counter()
    first = 1 + len(module.input_names) - len(module.feature_names)  # args[0] is the module
    dynamic = [(first + i, 1) for i in range(len(module.feature_names))]  # tokens x (1 + keyframes)
    compiled = precompile(WindowStepModule.forward, args, dynamic)
    compile_s = time.perf_counter() - t0
    size = save(compiled, path)
    log.info("precompiled the window step in %.0f s; wrote %s (%.1f MB)", compile_s, path, size / 1e6)
    outputs = dict(zip(OUTPUT_NAMES, call(compiled, args, path, build_command), strict=True))
    specs = [artifacts.TensorSpec(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in outputs.items()]
    extra = {"compile_s": round(compile_s, 1), "bytes": size, "mode": "default", **code_facts()}
    extra["module_layout"] = module_layout(module)
    io = window_step_io(example, specs, k)
    return torch_artifacts.sidecar(
        KIND, models, config, precision=precision, k=k, io=io, device=device, build_command=build_command, extra=extra
    )


def check_step(meta, path: Path, device, *, rebuild: str, **facts_of_run: Any) -> None:
    """The sidecar against this machine and code (device, torch, CUDA, GPU, Python, diffusers, sources) and, when
    given, the run (weights, config, precision, keyframes)."""
    torch_artifacts.check(meta, path, device, kind=KIND, what="a precompiled step", rebuild=rebuild, **facts_of_run)
    for name, current in code_facts().items():
        built = meta.extra.get(name)
        if built != current:
            what = "this package's sources differ" if name == "source_hash" else f"{name} differs"
            raise EngineMismatchError(
                f"{path}: {what}: built for {str(built)[:16]!r}, current {str(current)[:16]!r}; rebuild with "
                f"`{rebuild}`"
            )


def find_step(models: Any, config: Any, device, engine: str | Path | None) -> Path | None:
    """The precompiled step for this run: ``engine`` when given (it must match), else the default path when a
    file is there (checked the same way), else None."""
    rebuild = rebuild_command(config, artifacts.engine_keyframes(config))
    return torch_artifacts.find(
        models, config, device, engine, default_path=default_step_path, check_file=check_step, rebuild=rebuild
    )


# ---------------------------------------------------------------------------------------------------- the step


class PrecompiledWindowStep(EagerWindowStep):
    """``--backend compile`` from a precompiled file: the loaded function called on the module's networks; on CUDA
    devices replayed from CUDA graphs like the compiled step (:mod:`personalive.backends.graphs`)."""

    name = "compile"

    def __init__(self, module: WindowStepModule, path: Path, *, rebuild: str, cuda_graphs: bool = False) -> None:

        super().__init__(module, cuda_graphs=cuda_graphs)
        self.path, self.rebuild = Path(path), rebuild
        check_layout(module, artifacts.read_sidecar(self.path).extra.get("module_layout"), self.path, rebuild)
        self.compiled = load(self.path, vars(sys.modules[WindowStepModule.__module__]))

    @classmethod
    def from_path(cls, path: Path, models: Any, config: Any, device) -> PrecompiledWindowStep:
        """The step of ``models`` from the (checked) file at ``path``."""
        from personalive.backends.graphs import use_graphs

        rebuild = rebuild_command(config, artifacts.engine_keyframes(config))
        return cls(
            build_window_module(models, config).eval(),  # as built (the networks loaded for inference are already)
            path,
            rebuild=rebuild,
            # as the compiled step: the loaded function still launches inductor's kernels one by one from Python
            cuda_graphs=use_graphs(config.runtime.cuda_graphs, pays=True),
        )

    def _plain_call(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise PersonaLiveError(f"window step inputs lack {missing}: pass every name of window_input_names()")
        args = (self.module, *(as_traced(inputs[n]) for n in self.input_names))
        return dict(zip(OUTPUT_NAMES, call(self.compiled, args, self.path, self.rebuild), strict=True))


def open_step(path: Path, config: Any, precision: str, device) -> PrecompiledWindowStep:
    """The file bound to freshly loaded weights of the step's networks in ``precision`` (for verify-engine)."""
    from personalive.environment import torch_dtype
    from personalive.pipeline.window import WINDOW_STEP_NETWORKS
    from personalive.weights import load_models

    dtype, fp32 = torch_dtype(precision), torch_dtype("fp32")
    models = load_models(Path(config.model.weights_dir), dtype, device, fp32, WINDOW_STEP_NETWORKS)
    return PrecompiledWindowStep.from_path(path, models, config, device)
