"""Errors a user can act on. Each kind carries the process exit code the CLI turns it into.

Exit codes: 0 success, 1 runtime failure, 2 usage or input error.
"""

from __future__ import annotations


class PersonaLiveError(Exception):
    """Base class: the message is one line that says what was expected, what was found and the fix."""

    exit_code = 1


class ConfigError(PersonaLiveError):
    """A configuration key or value is wrong (unknown key, wrong type, out of range)."""

    exit_code = 2


class InputError(PersonaLiveError):
    """A user-supplied file is missing, unreadable or not what it should be."""

    exit_code = 2


class OutputError(PersonaLiveError):
    """The output cannot be written (exists without --overwrite, unwritable directory)."""

    exit_code = 2


class WeightsError(PersonaLiveError):
    """A weights directory is missing, incomplete, corrupt or of the wrong layout."""

    exit_code = 2


class DownloadError(WeightsError):
    """Weights cannot be fetched from the Hugging Face Hub (offline and not cached, no access, missing file)."""

    exit_code = 1


class DeviceError(PersonaLiveError):
    """The requested device or dtype is not available on this machine."""

    exit_code = 2


class MissingDependencyError(PersonaLiveError):
    """An optional package (tensorrt, onnxruntime) is needed and not installed."""

    exit_code = 2


class EngineMismatchError(PersonaLiveError):
    """A TensorRT engine was built for other weights, config, GPU or TensorRT version."""

    exit_code = 2


class VerificationError(PersonaLiveError):
    """An exported graph or engine disagrees with the PyTorch step beyond tolerance."""

    exit_code = 1


class JobsFailedError(PersonaLiveError):
    """At least one job of a batch failed (each is listed in the log and the report)."""

    exit_code = 1


class WriteError(PersonaLiveError):
    """The output could not be written while running (disk full, directory removed, I/O error)."""

    exit_code = 1


class ExportError(PersonaLiveError):
    """The ONNX export or its check failed."""


class EngineBuildError(PersonaLiveError):
    """TensorRT could not parse the graph or build the engine."""


class EngineRuntimeError(PersonaLiveError):
    """TensorRT refused the inputs or failed while running."""


class GarbageOutputError(PersonaLiveError):
    """The run produced no picture (every frame one flat colour: NaN or broken weights); nothing is written."""

    exit_code = 1
