"""The fp8 linear of benchmarks/precision_gpu.py: e4m3 quantisation round trip, the ``_scaled_mm`` product
against dequantised operands through a float matmul, and the layer swap's counts and restore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.precision_gpu import (
    E4M3,
    E4M3_MAX,
    Fp8Linear,
    dequantise,
    fp8_unavailable,
    quantise_e4m3,
    restore_linears,
    swap_linears,
)

# e4m3: 3 mantissa bits, so rounding a normal number errs by at most 2^-4 of it; below the smallest normal
# (2^-6 in quantised units) the grid step is 2^-9, so the absolute error there is at most 2^-10
REL, SUB = 2.0**-4, 2.0**-10


def _within_e4m3(x: torch.Tensor, scale: torch.Tensor) -> None:
    q, s = quantise_e4m3(x, rowwise=scale.ndim > 0)
    assert q.dtype == E4M3 and q.shape == x.shape
    err = (dequantise(q, s) - x).abs()
    bound = REL * x.abs() + SUB * s + 1e-12
    assert bool((err <= bound).all()), float((err / bound).max())


@pytest.mark.parametrize("rowwise", [False, True])
def test_round_trip_is_within_e4m3_precision(rowwise):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=g) * torch.logspace(-3, 2, 64).unsqueeze(1)  # rows 1e-3 .. 1e2
    q, scale = quantise_e4m3(x, rowwise)
    assert scale.shape == ((64, 1) if rowwise else ())
    _within_e4m3(x, scale)
    # the largest magnitude (per row or overall) maps to e4m3's largest finite value
    amax_q = q.float().abs().amax(dim=-1) if rowwise else q.float().abs().amax()
    assert torch.all(amax_q == E4M3_MAX)
    # the whole tensor: within 2^-3 of its largest magnitude (the brief's coarse bound) in both modes
    assert float((dequantise(q, scale) - x).abs().max()) <= 2.0**-3 * float(x.abs().max())


def test_rowwise_keeps_small_rows_that_per_tensor_flushes():
    x = torch.tensor([[1000.0, -500.0], [1e-4, 2e-4]])
    per_tensor = dequantise(*quantise_e4m3(x, rowwise=False))
    rowwise = dequantise(*quantise_e4m3(x, rowwise=True))
    assert torch.equal(per_tensor[1], torch.zeros(2))  # 2e-4 / (1000 / 448) is below e4m3's smallest subnormal
    assert torch.allclose(rowwise[1], x[1], rtol=REL)


def test_all_zero_input_quantises_to_zero():
    q, scale = quantise_e4m3(torch.zeros(4, 16))
    assert float(scale) > 0 and torch.equal(dequantise(q, scale), torch.zeros(4, 16))


def _devices():
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda"))
    return out


@pytest.mark.parametrize("rowwise", [False, True])
@pytest.mark.parametrize("device", _devices(), ids=str)
def test_fp8_linear_matches_dequantised_float_matmul(device, rowwise):
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    reason = fp8_unavailable(device, dtype, rowwise)
    if reason:
        pytest.skip(reason)
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 48).to(dtype).requires_grad_(False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=g) * 0.1)
        linear.bias.copy_(torch.randn(48, generator=g))
    linear = linear.to(device)
    x = (torch.randn(2, 5, 64, generator=g) * 3).to(device=device, dtype=dtype)  # 10 rows: not a multiple of 16
    got = Fp8Linear(linear, rowwise)(x)
    assert got.shape == (2, 5, 48) and got.dtype == dtype
    # the reference: both operands quantised the same way, dequantised, multiplied in fp64
    qa, sa = quantise_e4m3(x.reshape(-1, 64), rowwise)
    qw, sw = quantise_e4m3(linear.weight, rowwise)
    want = dequantise(qa, sa).double() @ dequantise(qw, sw).double().t() + linear.bias.double()
    tol = 2e-3 if dtype == torch.float16 else 1e-5  # fp16 output rounding vs fp32 accumulation only
    err = (got.reshape(-1, 48).double() - want).abs().max() / want.abs().max()
    assert float(err) <= tol
    # and it is an approximation of the original linear: e4m3 rounding of both operands, a few percent at most
    exact = linear(x).double()
    assert float((got.double() - exact).abs().max() / exact.abs().max()) < 0.1


def test_swap_counts_converts_and_restores():
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 10), nn.Linear(10, 32)))
    originals = [model[0], model[2][0], model[2][1]]
    swapped, left = swap_linears(model, rowwise=False)
    assert [orig for _, _, orig in swapped] == originals[:1]
    assert left == 2  # 16 -> 10 and 10 -> 32: an output or input size that is not a multiple of 16
    assert isinstance(model[0], Fp8Linear) and type(model[2][0]) is nn.Linear
    restore_linears(swapped)
    assert [model[0], model[2][0], model[2][1]] == originals
