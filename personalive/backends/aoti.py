"""The AOTInductor engine: the window step compiled ahead of time into a package that loads without compiling.

Build (``personalive build-engine --format aoti``): ``torch.export`` (non-strict) of
:class:`~personalive.pipeline.window.WindowStepModule`, then ``torch._inductor.aoti_compile_and_package`` into
``engines/<stem>-<device>-torch<version>.pt2`` with a sidecar like every engine's. Run (``--backend aoti``):
``aoti_load_package`` and one call per window; no JIT compilation in the process.

**Weights stay out of the package** (inductor's ``aot_inductor.package_constants_in_so=False``): the package
holds generated code and kernels only, and at load the runtime is handed the step's own parameters and buffers --
the networks the pipeline has already loaded, strictly, from the weights directory -- by fully qualified name
(``load_constants(..., user_managed=True)``: no copy). Why:

* at full size the constants are 3.4 GB in fp16: inside the shared object (past 2 GB inductor appends them to the
  ``.so`` and memory-maps them) the package is 3.4 GB to write, copy and load;
* the pipeline loads these networks anyway; a package with its own copy would hold the weights twice on the GPU;
* a package of code only is quick to write, copy and load.

The price: the package is tied to the weights by the sidecar's weights hash (checked) and to the module's
parameter names (checked at load: a name the package needs and the module lacks is an error).

**The C++ wrapper must link libstdc++ dynamically.** Built by a compiler that links it statically, the package
crashes the loading process (see :mod:`personalive.backends.aoti_wrapper`), which refuses such a package at build and
before every load. **Packages load single-threaded** (``run_single_threaded=True``): the step is called from one
thread, and the container's cross-thread synchronisation is what stopped CUDA graphs from capturing it.

**The keyframe axis is one dynamic dimension.** Each reference feature's token axis is ``L_i * k`` with one shared
symbol ``k`` = 1 + keyframes in ``1..1 + max_keyframes`` (``torch.export`` derived dimensions), so the graph knows
the features grow together. One package per keyframe count was the alternative: it would multiply the build
(minutes at full size), the disk use and the load time by ``1 + max_keyframes`` for a gain confined to the few
kernels that touch reference tokens -- those tokens only enter the self-attentions' keys and values (the fused
attention kernels take any length) and the ``to_k``/``to_v`` projections (cuBLAS). Every other kernel keeps the
static shapes of the config. ``benchmarks/RESULTS.md`` has the step time with 0 and 3 keyframes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalive.backends import torch_artifacts
from personalive.backends.aoti_wrapper import AOTIError, check_wrapper, loading
from personalive.backends.torch_artifacts import device_facts
from personalive.errors import InputError
from personalive.pipeline.window import OUTPUT_NAMES, STATE_INPUT_NAMES, WINDOW_STEP_NETWORKS

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PACKAGE_SUFFIX = ".pt2"
# inductor options of every package: constants outside the shared object (see the module docstring); the C++
# wrapper, which only sequences kernel launches (hidden behind GPU time), compiled at -O0: its 3.5 MB of source
# took over twice as long at inductor's default -O1 (tiny step on a loaded 2-core CPU: > 10 min against 6 min)
AOTI_OPTIONS: dict[str, Any] = {
    "aot_inductor.package_constants_in_so": False,
    "aot_inductor.compile_wrapper_opt_level": "O0",
}


def export_program(module: torch.nn.Module, inputs: dict[str, torch.Tensor], base_tokens: dict[str, int], k: int):
    """``torch.export`` of the window step; ``base_tokens``: each reference feature's tokens for one image.

    With ``k`` > 0 history keyframes every reference feature's token axis is ``base * images`` with one shared
    ``images`` in ``1..1 + k``; with ``k`` = 0 every shape is static.
    """
    import torch

    names = list(inputs)
    refs = [n for n in names if n not in STATE_INPUT_NAMES]
    if k > 0 and min(base_tokens[n] for n in refs) < 2:
        # symbolic sizes are assumed >= 2: a feature of 1 token x 1 image would run with wrong broadcasting
        raise AOTIError(
            "the image is too small for a dynamic keyframe axis (a reference feature of 1 token per image): "
            "use at least 128x128, or --max-keyframes 0"
        )
    if k > 0:
        images = torch.export.Dim("reference_images", min=1, max=1 + k)
        ref_shapes: tuple = tuple({1: base_tokens[n] * images} for n in refs)
    else:
        ref_shapes = tuple(None for _ in refs)
    dynamic = (*([None] * (len(names) - len(refs))), ref_shapes)  # forward(*state, *reference_features)
    with torch.no_grad():
        return torch.export.export(module, tuple(inputs.values()), dynamic_shapes=dynamic, strict=False)


def compile_package(program, path: str | Path) -> Path:
    """AOTInductor compilation of an exported program into the package ``path`` (written atomically)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.pt2")
    # inductor writes the package's metadata (device key, CPU ISA...) into the config's ``aot_inductor.metadata``
    # dict in place, so the process's own dict would keep it after the build and change the key of every later
    # compilation's FX graph cache entry (a compile cache built later in that process then missed in every other):
    # give it a dict of this call's
    options = {**AOTI_OPTIONS, "aot_inductor.metadata": {}}
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=options)
    except Exception as exc:  # noqa: BLE001 - inductor raises many types; report one line
        tmp.unlink(missing_ok=True)
        raise AOTIError(f"{path}: AOTInductor compilation failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    try:
        check_wrapper(tmp, building=True)
    except AOTIError as exc:
        tmp.unlink(missing_ok=True)
        raise AOTIError(str(exc).replace(str(tmp), str(path))) from None
    tmp.replace(path)
    return path


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def constants_map(module: torch.nn.Module, fqns: list[str], path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``module`` the package needs, by fully qualified name (parameters and all buffers)."""
    named = dict(module.named_parameters())
    named.update(module.named_buffers())
    missing = [name for name in fqns if name not in named]
    if missing:
        raise AOTIError(
            f"{path}: the package needs {len(missing)} tensor(s) the window step does not have (first: "
            f"{missing[0]}); it was built from other code; rebuild it with `personalive build-engine --format aoti`"
        )
    return {name: named[name] for name in fqns}


class AOTIRunner:
    """A loaded package with the step's weights bound: ``outputs = runner(inputs)``, dicts keyed by name."""

    def __init__(self, path: str | Path, module: torch.nn.Module, input_names: list[str], device: torch.device):
        import torch

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: file not found")
        check_wrapper(self.path)  # before the loader: a bad wrapper would end the process, not raise
        self.input_names = list(input_names)
        index = device.index if device.type == "cuda" and device.index is not None else -1
        t0 = time.perf_counter()
        try:
            # single-threaded: the pipeline calls the step from one thread, and the container's cross-thread
            # bookkeeping (events, waits) is not capturable: with it, the CUDA graph capture failed on the H200
            # ("operation not permitted when stream is capturing") and the step ran uncaptured
            with loading():
                self.model = torch._inductor.aoti_load_package(
                    str(self.path), run_single_threaded=True, device_index=index
                )
            self.module = module  # user-managed constants: these tensors must outlive the runner
            fqns = list(self.model.get_constant_fqns())
            self.model.load_constants(
                constants_map(module, fqns, self.path), check_full_update=True, user_managed=True
            )
        except AOTIError:
            raise
        except Exception as exc:  # noqa: BLE001 - the loader raises RuntimeError with C++ text
            raise AOTIError(
                f"{self.path}: AOTInductor could not load the package ({_first_line(exc)}); rebuild it with "
                "`personalive build-engine --format aoti`"
            ) from exc
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "AOTInductor package %s loaded in %.1f s (%d constants bound)", self.path, self.load_seconds, len(fqns)
        )

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise AOTIError(f"{self.path}: inputs missing: {', '.join(missing)}")
        with torch.no_grad():
            outputs = self.model(*(inputs[n].contiguous() for n in self.input_names))
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))


# ------------------------------------------------------------------------------------------- build and sidecar
def default_package_path(
    engine_dir: str | Path, weights_hash: str, subset: dict, precision: str, k: int, facts: dict
) -> Path:
    """``engines/<stem>-<sm90|cpu>-torch<version>.pt2``; used by build-engine and by the runtime's lookup."""
    return torch_artifacts.artifact_path(engine_dir, weights_hash, subset, precision, k, facts, PACKAGE_SUFFIX)


def rebuild_command(config: Any, k: int) -> str:
    return torch_artifacts.rebuild_command(config, k, "aoti")


def build_package(models: Any, config: Any, path: Path, *, precision: str, k: int, device, build_command: str):
    """Export and compile the window step of ``models`` (already in ``precision`` on ``device``) to ``path``.

    Returns the sidecar (not yet written). The trace runs on inputs with one history keyframe when ``k`` > 0, so a
    size baked into the graph by mistake shows up at 1x.
    """
    import torch

    from personalive.backends.onnx import window_step_io
    from personalive.environment import torch_dtype
    from personalive.pipeline.window import build_window_module, example_window_inputs

    dtype = torch_dtype(precision)
    module = build_window_module(models, config).eval()
    generator = torch.Generator(device=device).manual_seed(0)
    base = example_window_inputs(models, config, device, dtype, num_keyframes=0, generator=generator)
    trace = example_window_inputs(models, config, device, dtype, num_keyframes=min(1, k), generator=generator)
    t0 = time.perf_counter()
    program = export_program(module, trace, {n: base[n].shape[1] for n in module.feature_names}, k)
    export_s = time.perf_counter() - t0
    log.info("exported the window step in %.0f s; compiling with AOTInductor (minutes at full size)", export_s)
    t0 = time.perf_counter()
    compile_package(program, path)
    compile_s = time.perf_counter() - t0
    log.info("wrote %s (%.1f MB) in %.0f s", path, path.stat().st_size / 1e6, compile_s)
    extra = {
        "export_s": round(export_s, 1),
        "compile_s": round(compile_s, 1),
        "package_bytes": path.stat().st_size,
        "inductor_options": AOTI_OPTIONS,
    }
    io = window_step_io(base, output_specs(program), k)
    return torch_artifacts.sidecar(
        "aoti",
        models,
        config,
        precision=precision,
        k=k,
        io=io,
        device=device,
        build_command=build_command,
        extra=extra,
    )


def output_specs(program) -> list:
    """Names, dtypes and (static) shapes of the exported program's outputs."""
    from personalive.backends import artifacts
    from personalive.pipeline.window import OUTPUT_NAMES

    values = [node.meta["val"] for node in program.graph.output_node().args[0]]
    return [
        artifacts.TensorSpec(name, str(v.dtype).removeprefix("torch."), [int(d) for d in v.shape])
        for name, v in zip(OUTPUT_NAMES, values, strict=True)
    ]


def check_package(meta, path: Path, device, *, rebuild: str, **facts_of_run: Any) -> None:
    """The sidecar against this machine (device, torch, CUDA, GPU) and, when given, the run (weights, config...)."""
    what = "an AOTInductor package"
    torch_artifacts.check(meta, path, device, kind="aoti", what=what, rebuild=rebuild, **facts_of_run)


def open_package(path: Path, config: Any, precision: str, device) -> AOTIRunner:
    """The package bound to freshly loaded weights of the step's networks in ``precision`` (for verify-engine)."""
    from personalive.environment import torch_dtype
    from personalive.pipeline.window import build_window_module
    from personalive.weights import load_models

    dtype, fp32 = torch_dtype(precision), torch_dtype("fp32")
    models = load_models(Path(config.model.weights_dir), dtype, device, fp32, WINDOW_STEP_NETWORKS)
    module = build_window_module(models, config).eval()
    return AOTIRunner(path, module, module.input_names, device)


# ---------------------------------------------------------------------------------------------------- backend
class AOTIStep:
    """The WindowStep backed by an AOTInductor package (see :class:`personalive.pipeline.window.WindowStep`)."""

    name = "aoti"
    # the package holds no weights: the step's networks are loaded and bound to it (see the module docstring)
    networks: tuple[str, ...] = WINDOW_STEP_NETWORKS

    def __init__(self, runner: AOTIRunner, module: torch.nn.Module, *, cuda_graphs: bool = False) -> None:
        from personalive.backends.graphs import GraphedStep

        self.runner, self.module = runner, module
        # the package's wrapper still launches every kernel from the host; a graph replays them in one launch
        self.graphed = GraphedStep(runner, "AOTInductor window step") if cuda_graphs else None

    @classmethod
    def check_available(cls, device: torch.device) -> None:
        """Loading a package needs nothing beyond torch (no compiler); the device is checked against the sidecar."""

    @classmethod
    def from_models(cls, models: Any, config: Any, device: torch.device, engine: str | Path | None = None) -> AOTIStep:
        from personalive.backends import artifacts
        from personalive.pipeline.window import build_window_module

        k = artifacts.engine_keyframes(config)
        rebuild = rebuild_command(config, k)
        if engine is not None:
            path = Path(engine)
            if not path.is_file():
                raise InputError(f"--engine {path}: file not found; build one with `{rebuild}`")
        else:
            subset = artifacts.config_subset(config)
            facts = device_facts(device)
            path = default_package_path(
                config.runtime.engine_dir, models.weights_hash, subset, str(config.model.dtype), k, facts
            )
            if not path.is_file():
                raise InputError(
                    f"no AOTInductor package for these weights, config and device at {path}; build it with "
                    f"`{rebuild}` (or pass --engine PATH)"
                )
        meta = artifacts.read_sidecar(path)
        check_package(
            meta,
            path,
            device,
            rebuild=rebuild,
            weights_hash=models.weights_hash,
            config=artifacts.config_subset(config),
            precision=str(config.model.dtype),
            max_keyframes=k,
        )
        module = build_window_module(models, config).eval()
        runner = AOTIRunner(path, module, module.input_names, device)
        from personalive.backends.graphs import use_graphs

        # auto: on. The step alone gains only 1-2 ms a window from graphs (fourth session: its wrapper's launches
        # keep up with the GPU), but in the job the host also runs conditioning's networks and falls behind: the
        # 10 s clip's steady windows took ~170 ms without graphs and ~135 ms with on one machine (call U, eighth
        # session), and a second job's loop was 6 % faster with them on another (call V)
        return cls(runner, module, cuda_graphs=use_graphs(config.runtime.cuda_graphs, pays=True))

    @property
    def input_names(self) -> list[str]:
        return self.module.input_names

    @property
    def feature_names(self) -> list[str]:
        return self.module.feature_names

    def project_reference(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        with torch.inference_mode():
            return self.module.denoising_unet.project_reference(features)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return (self.graphed or self.runner)(inputs)
