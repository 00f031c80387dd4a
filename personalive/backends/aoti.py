"""The AOTInductor engine: the window step compiled ahead of time into a package that loads without compiling.

Build (``personalive build-engine --format aoti``): ``torch.export`` (non-strict) of
:class:`~personalive.pipeline.window.WindowStepModule`, then ``torch._inductor.aoti_compile_and_package`` into
``engines/<stem>-<device>-torch<version>.pt2`` with a sidecar like every engine's. Run (``--backend aoti``):
``aoti_load_package`` and one call per window; no JIT compilation in the process.

**Weights stay out of the package** (inductor's ``aot_inductor.package_constants_in_so=False``): the package
holds generated code and kernels only, and at load the runtime is handed the step's own parameters and buffers --
the networks the pipeline has already loaded, strictly, from the weights directory -- by fully qualified name
(``load_constants(..., user_managed=True)``: no copy). Why:

* at full size the constants are 3.4 GB in fp16; inside the shared object (past 2 GB inductor appends them to the
  ``.so`` and memory-maps them) ``aoti_load_package`` segfaulted in the generated wrapper twice (torch 2.11, H200);
* the pipeline loads these networks anyway; a package with its own copy would hold the weights twice on the GPU;
* a package of code only is quick to write, copy and load.

The price: the package is tied to the weights by the sidecar's weights hash (checked) and to the module's
parameter names (checked at load: a name the package needs and the module lacks is an error).

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

from personalive.backends.base import OUTPUT_NAMES, STATE_INPUT_NAMES
from personalive.errors import InputError, PersonaLiveError

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


class AOTIError(PersonaLiveError):
    """The export, the compilation or the loading of an AOTInductor package failed."""


def device_facts(device: torch.device) -> dict[str, str | None]:
    """What a package is specific to: torch and CUDA versions, device type, GPU name and compute capability."""
    import torch

    facts: dict[str, str | None] = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device_type": device.type,
        "gpu_name": None,
        "compute_capability": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["gpu_name"] = props.name
        facts["compute_capability"] = f"{props.major}.{props.minor}"
    return facts


def device_tag(facts: dict[str, str | None]) -> str:
    """``sm90`` for a GPU of compute capability 9.0, ``cpu`` for the CPU."""
    cc = facts.get("compute_capability")
    return f"sm{cc.replace('.', '')}" if cc else str(facts["device_type"])


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
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=AOTI_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - inductor raises many types; report one line
        tmp.unlink(missing_ok=True)
        raise AOTIError(f"{path}: AOTInductor compilation failed: {type(exc).__name__}: {_first_line(exc)}") from exc
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
        self.input_names = list(input_names)
        index = device.index if device.type == "cuda" and device.index is not None else -1
        t0 = time.perf_counter()
        try:
            self.model = torch._inductor.aoti_load_package(str(self.path), device_index=index)
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
