"""ONNX: export of the window step (or any module with named tensor I/O), its check, and an onnxruntime runner.

ONNX is the interface to TensorRT and to any other engine compiler; nothing here imports TensorRT.

The exporter is torch's TorchScript-based one (``dynamo=False``): it traces the module once, keeps our input and
output names verbatim and marks only the axes named in ``dynamic_axes`` as symbolic. The window step is a fixed
graph (fixed timesteps, window and resolution) whose only data-dependent size is the reference-feature token
axis, which the trace handles as a symbolic dimension. Graphs over ``EXTERNAL_DATA_BYTES`` (any full-size step)
are written with their weights in one external file ``<name>.onnx.data`` beside the graph, as protobuf cannot
hold more than 2 GB, and are checked with ``onnx.checker`` through the path form that reads external data.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from personalive import _optional
from personalive.backends.artifacts import Sidecar, TensorSpec, config_subset
from personalive.errors import ExportError, PersonaLiveError
from personalive.pipeline.window import OUTPUT_NAMES, STATE_INPUT_NAMES, build_window_module, example_window_inputs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ONNX_OPSET = 17  # LayerNormalization is native from 17; TensorRT 10's parser supports it
EXTERNAL_DATA_BYTES = 1 << 30  # above this many bytes of weights the graph keeps them in an external file

_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32"}  # TensorProto -> torch names


def torch_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def export_onnx(
    module: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    path: str | Path,
    *,
    output_names: list[str] | tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = ONNX_OPSET,
    external_data: bool | None = None,
) -> Path:
    """Export ``module(*inputs.values())`` to ``path`` with the dict's keys as input names; return ``path``.

    ``external_data``: None decides by size (see ``EXTERNAL_DATA_BYTES``). The graph's input and output names
    are checked against the requested ones (an input the module does not use would vanish from the graph).
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_names = list(inputs)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in module.buffers())
    if external_data is None:
        external_data = weight_bytes > EXTERNAL_DATA_BYTES
    log.info("exporting ONNX graph to %s (%.1f MB of weights, opset %d)", path, weight_bytes / 1e6, opset)

    # torch writes one file per tensor next to a graph over 2 GB: export into a scratch folder, then re-save
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        raw = Path(scratch) / path.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                module.eval(),
                tuple(inputs.values()),
                str(raw),
                input_names=input_names,
                output_names=list(output_names),
                dynamic_axes=dynamic_axes or {},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        _remove_artifact(path)
        if external_data:
            model = onnx.load(str(raw), load_external_data=True)
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
                size_threshold=1024,
            )
            del model
        else:
            shutil.move(str(raw), path)
    check_onnx(path, input_names, list(output_names))
    return path


def _remove_artifact(path: Path) -> None:
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)


def check_onnx(path: str | Path, input_names: list[str], output_names: list[str]) -> None:
    """``onnx.checker`` by path (works past 2 GB) plus an exact check of the graph's I/O names and order."""
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: onnx.checker rejected the exported graph: {str(exc).splitlines()[0]}") from exc
    graph = onnx.load(str(path), load_external_data=False).graph
    found_in = [value.name for value in graph.input]
    found_out = [value.name for value in graph.output]
    if found_in != input_names or found_out != output_names:
        raise ExportError(
            f"{path}: graph I/O names differ from the contract: inputs {found_in} (expected {input_names}), "
            f"outputs {found_out} (expected {output_names}); an input the step does not use is dropped by the "
            "exporter"
        )


# ---------------------------------------------------------------------------------------------- the window step


def reference_names(inputs: dict[str, torch.Tensor]) -> list[str]:
    """The reference-feature input names, in the order of the step's inputs (after the state inputs)."""
    return [name for name in inputs if name not in STATE_INPUT_NAMES]


def token_dynamic_axes(ref_names: list[str]) -> dict[str, dict[int, str]]:
    """Only the token axis (1) of every reference feature is dynamic; each gets its own symbol."""
    return {name: {1: f"{name}_tokens"} for name in ref_names}


def token_profile(base_shape: list[int], max_keyframes: int) -> dict[str, list[int]]:
    """(B, L, C) -> min 1x, opt 2x (1x when no keyframes), max (1 + K)x of the base tokens L."""
    b, tokens, channels = base_shape
    opt = 2 if max_keyframes >= 1 else 1
    return {
        "min": [b, tokens, channels],
        "opt": [b, tokens * opt, channels],
        "max": [b, tokens * (1 + max_keyframes), channels],
    }


def window_step_io(
    inputs: dict[str, torch.Tensor], outputs: list[TensorSpec], max_keyframes: int
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Tensor specs of the step: inputs from a draw with 0 keyframes (token profiles from it), outputs as given."""
    ref = set(reference_names(inputs))
    specs_in = []
    for name, tensor in inputs.items():
        shape = list(tensor.shape)
        if name in ref:
            specs_in.append(
                TensorSpec(
                    name, torch_dtype_name(tensor.dtype), [shape[0], -1, shape[2]], token_profile(shape, max_keyframes)
                )
            )
        else:
            specs_in.append(TensorSpec(name, torch_dtype_name(tensor.dtype), shape))
    return specs_in, outputs


def graph_output_specs(path: str | Path) -> list[TensorSpec]:
    """Output names, dtypes and (static) shapes as the exporter recorded them in the graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    specs = []
    for value in graph.output:
        tensor_type = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor_type.elem_type, onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower())
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        specs.append(TensorSpec(value.name, dtype, shape))
    return specs


def export_window_step(
    models,
    config,
    path: str | Path,
    *,
    precision: str,
    max_keyframes: int,
    device: torch.device,
    build_command: str,
    external_data: bool | None = None,
    seed: int = 0,
) -> Sidecar:
    """Export the window step for ``config`` (resolution, window, steps, scheduler) to ``path``; return its sidecar.

    ``models`` must already be in ``precision`` on ``device`` (the module is not cast: buffers it keeps in fp32
    on purpose stay fp32). The trace runs on inputs with one history keyframe
    (reference features twice the base length), so a size baked into the graph by mistake shows up at 1x.
    """
    import torch

    from personalive import __version__
    from personalive.environment import torch_dtype

    dtype = torch_dtype(precision)
    module = build_window_module(models, config).eval()  # models are in `precision`; fp32 buffers stay fp32
    generator = torch.Generator(device=device).manual_seed(seed)
    base = example_window_inputs(models, config, device, dtype, num_keyframes=0, generator=generator)
    trace = example_window_inputs(
        models, config, device, dtype, num_keyframes=min(1, max_keyframes), generator=generator
    )
    export_onnx(
        module,
        trace,
        path,
        output_names=OUTPUT_NAMES,
        dynamic_axes=token_dynamic_axes(reference_names(base)),
        external_data=external_data,
    )
    specs_in, specs_out = window_step_io(base, graph_output_specs(path), max_keyframes)
    return Sidecar(
        kind="onnx",
        precision=precision,
        weights_hash=models.weights_hash,
        config=config_subset(config),
        max_keyframes=max_keyframes,
        inputs=specs_in,
        outputs=specs_out,
        personalive_version=__version__,
        build_command=build_command,
        onnx_opset=ONNX_OPSET,
    )


# -------------------------------------------------------------------------------------------------- onnxruntime
class OnnxRunner:
    """An ONNX graph on onnxruntime: CUDA provider on a CUDA device when onnxruntime has it, else the CPU one."""

    def __init__(self, path: str | Path, device: torch.device | None = None):
        ort = _optional.onnxruntime()
        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # don't spin against torch
        # memory over speed: pre-packed weight copies and the arena made a full-size fp32 graph (7.2 GB of weights)
        # exceed 24 GB of host memory; verification runs a few windows, not a video
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("onnxruntime session on %s", ", ".join(self.session.get_providers()))

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        feed = {}
        for name in self.input_names:
            tensor = inputs[name].detach().cpu()
            # numpy has no bfloat16, so onnxruntime's Python feed cannot take a bf16 graph's inputs
            if tensor.dtype == torch.bfloat16:
                raise PersonaLiveError(
                    f"{self.path}: onnxruntime cannot be fed bf16 input {name!r}; verify the TensorRT engine "
                    "built from this graph instead"
                )
            feed[name] = tensor.contiguous().numpy()
        results = self.session.run(self.output_names, feed)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, results, strict=True)}
