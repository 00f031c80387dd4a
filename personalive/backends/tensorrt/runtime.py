"""Run a TensorRT engine of the window step on PyTorch's CUDA tensors and stream.

No pycuda and no second CUDA context: the engine is deserialised in the process's primary context (the one
PyTorch uses), inputs are bound by name with ``set_tensor_address(name, tensor.data_ptr())``, outputs are
PyTorch tensors allocated after ``set_input_shape`` tells TensorRT the reference-feature lengths, and
``execute_async_v3`` is enqueued on ``torch.cuda.current_stream()``, so the step is ordered with the PyTorch work
around it and the caching allocator's stream semantics keep every buffer alive long enough.

Before the engine is touched, its sidecar is checked against the current TensorRT version, GPU, weights hash,
precision and config (:func:`personalive.backends.artifacts.check_sidecar`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from personalive import _optional
from personalive.backends import artifacts
from personalive.errors import DeviceError, EngineRuntimeError, InputError
from personalive.pipeline.window import OUTPUT_NAMES, STATE_INPUT_NAMES

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def gpu_facts(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability "8.9") of a CUDA device."""
    import torch

    if device.type != "cuda":
        raise DeviceError(f"--device {device}: TensorRT engines run on a CUDA GPU (use --device cuda)")
    props = torch.cuda.get_device_properties(device)
    return props.name, f"{props.major}.{props.minor}"


def _torch_dtype(trt, trt_dtype):
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8,
        trt.DataType.BOOL: torch.bool,
    }
    if trt_dtype not in table:
        raise EngineRuntimeError(f"TensorRT tensor type {trt_dtype} has no PyTorch equivalent")
    return table[trt_dtype]


class TensorRTRunner:
    """A deserialised engine with one execution context: ``outputs = runner(inputs)``, dicts keyed by name."""

    def __init__(self, engine_path: str | Path, device: torch.device):
        import torch

        trt = _optional.tensorrt()
        self.path, self.device = Path(engine_path), torch.device(device)
        gpu_facts(self.device)
        if self.device.index is None:  # "cuda" -> "cuda:N", so the inputs' device compares equal
            self.device = torch.device("cuda", torch.cuda.current_device())
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise EngineRuntimeError(
                    f"{self.path}: TensorRT could not deserialise the engine (built by another TensorRT version "
                    "or for another GPU?); rebuild it with `personalive build-engine`"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EngineRuntimeError(f"{self.path}: inputs missing: {', '.join(missing)}")
        bound = []  # contiguous views/copies, alive until the work is enqueued (the allocator orders reuse)
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            for name in self.input_names:
                tensor = inputs[name]
                if tensor.device != self.device or tensor.dtype != self.dtypes[name]:
                    raise EngineRuntimeError(
                        f"{self.path}: input {name!r} is {tensor.dtype} on {tensor.device}, the engine takes "
                        f"{self.dtypes[name]} on {self.device}"
                    )
                tensor = tensor.contiguous()
                bound.append(tensor)
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise EngineRuntimeError(
                        f"{self.path}: input {name!r} of shape {tuple(tensor.shape)} is outside the engine's "
                        f"profile {self.engine.get_tensor_profile_shape(name, 0)} (min, opt, max)"
                    )
                self.context.set_tensor_address(name, tensor.data_ptr())
            unresolved = self.context.infer_shapes()
            if unresolved:
                raise EngineRuntimeError(f"{self.path}: TensorRT could not infer shapes of {unresolved}")
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineRuntimeError(f"{self.path}: TensorRT execution failed (see the log above)")
        del bound
        return outputs


def resolve_engine_path(engine_path: str | Path | None, models, config, device: torch.device) -> Path:
    """The given engine, or the one ``build-engine`` writes for these weights, config, GPU and TensorRT."""
    if engine_path is not None:
        path = Path(engine_path)
        if not path.is_file():
            raise InputError(f"--engine {path}: file not found; build one with `{rebuild_command(models, config)}`")
        return path
    _, cc = gpu_facts(device)
    subset = artifacts.config_subset(config)
    path = artifacts.default_engine_path(
        config.runtime.engine_dir,
        models.weights_hash,
        subset,
        config.model.dtype,
        artifacts.engine_keyframes(config),
        cc,
        _optional.tensorrt().__version__,
    )
    if not path.is_file():
        raise InputError(
            f"no TensorRT engine for these weights, config and GPU at {path}; build it with "
            f"`{rebuild_command(models, config)}` (or pass --engine PATH)"
        )
    return path


def rebuild_command(models, config) -> str:
    return artifacts.build_command(
        None,
        config.model.weights_dir,
        artifacts.config_subset(config),
        config.model.dtype,
        artifacts.engine_keyframes(config),
    )


class TensorRTStep:
    """The WindowStep backed by a TensorRT engine (see :class:`personalive.pipeline.window.WindowStep`)."""

    name = "tensorrt"
    # the whole step runs in the engine; the reference keys/values it takes are projected once per reference image
    # in PyTorch by the denoising UNet's reference key/value layers alone (personalive.weights.projections)
    networks: tuple[str, ...] = ("reference_projections",)

    @classmethod
    def check_available(cls, device: torch.device) -> None:
        """TensorRT imports and ``device`` is a CUDA GPU."""
        _optional.tensorrt()
        gpu_facts(device)

    @classmethod
    def from_models(cls, models, config, device: torch.device, engine: str | Path | None = None) -> TensorRTStep:
        return cls(engine, models, config, device)

    def __init__(self, engine_path: str | Path | None, models, config, device: torch.device):
        import torch

        device = torch.device(device)
        trt = _optional.tensorrt()
        path = resolve_engine_path(engine_path, models, config, device)
        meta = artifacts.read_sidecar(path)
        gpu_name, cc = gpu_facts(device)
        artifacts.check_sidecar(
            meta,
            path,
            rebuild=rebuild_command(models, config),
            weights_hash=models.weights_hash,
            config=artifacts.config_subset(config),
            precision=config.model.dtype,
            max_keyframes=artifacts.engine_keyframes(config),
            tensorrt_version=trt.__version__,
            gpu_name=gpu_name,
            compute_capability=cc,
        )
        self.runner = TensorRTRunner(path, device)
        self.projections = models.reference_projections
        expected_in = [*STATE_INPUT_NAMES, *[n for n in meta.input_names if n not in STATE_INPUT_NAMES]]
        if self.runner.input_names != expected_in or self.runner.output_names != list(OUTPUT_NAMES):
            raise EngineRuntimeError(
                f"{path}: engine I/O {self.runner.input_names} -> {self.runner.output_names} does not match the "
                f"window-step contract; rebuild with `{rebuild_command(models, config)}`"
            )
        self.input_names = list(self.runner.input_names)
        self.feature_names = self.input_names[len(STATE_INPUT_NAMES) :]
        log.info("TensorRT engine %s loaded (%s, TensorRT %s)", path, gpu_name, trt.__version__)

    def project_reference(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        with torch.inference_mode():
            return self.projections.project_reference(features)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.runner(inputs)
