"""A plan book's replay as one TorchScript call, which holds no interpreter lock while it runs.

Why: the replay runs beside loading's imports (:mod:`personalive.device_warmup`). From Python, each of its ~360
operator calls releases the interpreter lock in C++ and then waits for the importing thread to give it back (up to
Python's 5 ms switch interval): on the H200 the replay took 6-10 s beside the imports (calls X and Y of the ninth
session) and slowed them by 2-3 s. TorchScript's interpreter releases the lock for the whole call, so the replay
and the imports only share the CPU.

:func:`script_calls` turns recorded calls (see :mod:`personalive.device_plans`) into the typed lists of
:func:`replay_script`: per call an operator kind, its tensors as views of a scratch buffer per dtype (``[dtype
index, storage offset, ndim, *shape, *stride]``, an empty list for an absent optional tensor), and its other
arguments as lists of ints, floats and flags. Calls of other operators are left to the Python replay.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F

CONVOLUTION, MM, ADDMM, BMM, BADDBMM, LINEAR, MATMUL, SDPA, CUDNN, FLASH, EFFICIENT = range(11)
KINDS = {
    "aten.convolution.default": CONVOLUTION,
    "aten.conv1d.default": CONVOLUTION,
    "aten.conv2d.default": CONVOLUTION,
    "aten.conv3d.default": CONVOLUTION,
    "aten.mm.default": MM,
    "aten.addmm.default": ADDMM,
    "aten.bmm.default": BMM,
    "aten.baddbmm.default": BADDBMM,
    "aten.linear.default": LINEAR,
    "aten.matmul.default": MATMUL,
    "aten.scaled_dot_product_attention.default": SDPA,
    "aten._scaled_dot_product_cudnn_attention.default": CUDNN,
    "aten._scaled_dot_product_flash_attention.default": FLASH,
    "aten._scaled_dot_product_efficient_attention.default": EFFICIENT,
}
# each kind's tensor arguments, in order, and its other arguments by kind of value
TENSORS = {
    CONVOLUTION: ("input", "weight", "bias"),
    MM: ("self", "mat2"),
    ADDMM: ("self", "mat1", "mat2"),
    BMM: ("self", "mat2"),
    BADDBMM: ("self", "batch1", "batch2"),
    LINEAR: ("input", "weight", "bias"),
    MATMUL: ("self", "other"),
    SDPA: ("query", "key", "value", "attn_mask"),
    CUDNN: ("query", "key", "value", "attn_bias"),
    FLASH: ("query", "key", "value"),
    EFFICIENT: ("query", "key", "value", "attn_bias"),
}
INTS = {CONVOLUTION: ("stride", "padding", "dilation", "output_padding", "groups")}
FLOATS = {ADDMM: ("beta", "alpha"), BADDBMM: ("beta", "alpha")}
FLOATS |= {kind: ("dropout_p", "scale") for kind in (SDPA, CUDNN, FLASH, EFFICIENT)}
FLAGS = {CONVOLUTION: ("transposed",), SDPA: ("is_causal",), FLASH: ("is_causal", "return_debug_mask")}
FLAGS |= {CUDNN: ("compute_log_sumexp", "is_causal", "return_debug_mask")}
FLAGS |= {EFFICIENT: ("compute_log_sumexp", "is_causal")}


def _view(scratch: list[torch.Tensor], spec: list[int]) -> torch.Tensor:
    n = spec[2]
    return scratch[spec[0]].as_strided(spec[3 : 3 + n], spec[3 + n : 3 + 2 * n], spec[1])


def _optional(scratch: list[torch.Tensor], spec: list[int]) -> Optional[torch.Tensor]:  # noqa: UP045 - TorchScript
    if len(spec) == 0:
        return None
    return _view(scratch, spec)


def _scale(value: float) -> Optional[float]:  # noqa: UP045 - TorchScript
    if value != value:  # NaN stands for None
        return None
    return value


def _replay(
    scratch: list[torch.Tensor],
    kinds: list[int],
    tensors: list[list[list[int]]],
    ints: list[list[list[int]]],
    floats: list[list[float]],
    flags: list[list[bool]],
) -> int:
    """Each call made once; returns a sum of output sizes (so that no call is optimised away)."""
    kept = 0
    for c in range(len(kinds)):
        kind, t, i, f, b = kinds[c], tensors[c], ints[c], floats[c], flags[c]
        if kind == 0:
            y = torch.convolution(
                _view(scratch, t[0]), _view(scratch, t[1]), _optional(scratch, t[2]), i[0], i[1], i[2], b[0], i[3],
                i[4][0],
            )  # fmt: skip
        elif kind == 1:
            y = torch.mm(_view(scratch, t[0]), _view(scratch, t[1]))
        elif kind == 2:
            y = torch.addmm(_view(scratch, t[0]), _view(scratch, t[1]), _view(scratch, t[2]), beta=f[0], alpha=f[1])
        elif kind == 3:
            y = torch.bmm(_view(scratch, t[0]), _view(scratch, t[1]))
        elif kind == 4:
            y = torch.baddbmm(_view(scratch, t[0]), _view(scratch, t[1]), _view(scratch, t[2]), beta=f[0], alpha=f[1])
        elif kind == 5:
            y = F.linear(_view(scratch, t[0]), _view(scratch, t[1]), _optional(scratch, t[2]))
        elif kind == 6:
            y = torch.matmul(_view(scratch, t[0]), _view(scratch, t[1]))
        elif kind == 7:
            q, k, v = _view(scratch, t[0]), _view(scratch, t[1]), _view(scratch, t[2])
            y = F.scaled_dot_product_attention(q, k, v, _optional(scratch, t[3]), f[0], b[0], scale=_scale(f[1]))
        elif kind == 8:
            q, k, v = _view(scratch, t[0]), _view(scratch, t[1]), _view(scratch, t[2])
            y = torch.ops.aten._scaled_dot_product_cudnn_attention(
                q, k, v, _optional(scratch, t[3]), b[0], f[0], b[1], b[2], scale=_scale(f[1])
            )[0]
        elif kind == 9:
            q, k, v = _view(scratch, t[0]), _view(scratch, t[1]), _view(scratch, t[2])
            y = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, f[0], b[0], b[1], scale=_scale(f[1]))[0]
        else:
            q, k, v = _view(scratch, t[0]), _view(scratch, t[1]), _view(scratch, t[2])
            y = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, _optional(scratch, t[3]), b[0], f[0], b[1], scale=_scale(f[1])
            )[0]
        kept += y.size(0)
    return kept


# compiled once, at import (the functions it calls are compiled with it). torch 2.11 marks torch.jit.script as
# deprecated in favour of torch.compile and torch.export, neither of which runs a Python-free loop of eager
# operators; if a later torch drops it, this import fails and the replay runs from Python
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.script.*")
    replay_script = torch.jit.script(_replay)


_MISSING = object()


def _bind(op: Any, call: dict[str, Any]) -> dict[str, Any]:
    """The recorded call's value of every argument of the operator's schema, by name (defaults filled in)."""
    values: dict[str, Any] = {}
    positional = iter(call["args"])
    for arg in op._schema.arguments:
        if not arg.kwarg_only and (value := next(positional, _MISSING)) is not _MISSING:
            values[arg.name] = value
        elif arg.name in call["kwargs"]:
            values[arg.name] = call["kwargs"][arg.name]
        elif arg.has_default_value():
            values[arg.name] = arg.default_value
        else:
            raise ValueError(f"{call['op']}: no value for {arg.name}")
    return values


def script_calls(
    calls: list[dict[str, Any]], dtypes: list[str], operator: Any
) -> tuple[tuple[list, ...], list[dict[str, Any]]]:
    """(the arguments of :func:`replay_script` after ``scratch``, the calls it cannot make). ``dtypes``: the
    scratch buffers' dtype names, in order; ``operator``: name -> OpOverload."""
    kinds, tensors, ints, floats, flags, rest = [], [], [], [], [], []
    for call in calls:
        kind = KINDS.get(call["op"])
        try:
            if kind is None:
                raise ValueError(call["op"])
            values = _bind(operator(call["op"]), call)
            if kind == CONVOLUTION and "transposed" not in values:  # conv1d/2d/3d: a convolution, not transposed
                spatial = len(values["weight"]["t"]) - 2
                values = values | {"transposed": False, "output_padding": [0] * spatial}
                if isinstance(values["padding"], str):
                    raise ValueError("padding by name")
                for name in ("stride", "padding", "dilation"):  # one value stands for every spatial dimension
                    values[name] = values[name] * spatial if len(values[name]) == 1 else values[name]
            specs = [_spec(values.get(name), dtypes) for name in TENSORS[kind]]
            row_ints = [[v] if isinstance(v := values[n], int) else list(v) for n in INTS.get(kind, ())]
            row_floats = [math.nan if values[n] is None else float(values[n]) for n in FLOATS.get(kind, ())]
            row_flags = [bool(values[n]) for n in FLAGS.get(kind, ())]
        except (ValueError, KeyError, TypeError, AttributeError):
            rest.append(call)
            continue
        kinds.append(kind)
        tensors.append(specs)
        ints.append(row_ints)
        floats.append(row_floats)
        flags.append(row_flags)
    return (kinds, tensors, ints, floats, flags), rest


def _spec(value: Any, dtypes: list[str]) -> list[int]:
    if value is None:
        return []
    if not (isinstance(value, dict) and "t" in value):
        raise TypeError("not a tensor")
    return [dtypes.index(value["d"]), value["o"], len(value["t"]), *value["t"], *value["s"]]
