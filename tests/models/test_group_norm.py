"""SplitGroupNorm computes GroupNorm: statistics over sub-rows, combined, against nn.GroupNorm in fp64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from personalive.models.group_norm import SplitGroupNorm, split_factor, split_group_norms
from personalive.weights import WeightsLayout, build_network, read_sizes

SHAPES = [((4, 64, 32, 32), 32), ((2, 40, 16, 8), 8), ((3, 32, 5, 7, 4), 4)]  # images, odd sizes, 5-D (frames)


def _norm_and_input(shape, groups, seed=0):
    torch.manual_seed(seed)
    norm = nn.GroupNorm(groups, shape[1], eps=1e-6).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    # a large per-channel offset: the combination of the sub-rows must not cancel catastrophically
    offset = torch.randn(shape[0], shape[1], *[1] * (len(shape) - 2), dtype=torch.float64) * 50
    return norm, torch.randn(shape, dtype=torch.float64) * 3 + offset


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize(("shape", "groups"), SHAPES)
@pytest.mark.parametrize("split", [2, 4, 8])
def test_split_statistics_give_group_norm_in_fp64_and_fp32(shape, groups, split):
    norm, x = _norm_and_input(shape, groups)
    with torch.no_grad():
        expected = norm(x)
        assert split_group_norms(nn.Sequential(norm)) == 1 and isinstance(norm, SplitGroupNorm)
        norm.split = split
        assert _rel(norm(x), expected) < 1e-13
        assert _rel(norm.float()(x.float()), expected) < 2e-6


def test_split_statistics_in_fp16_as_close_as_group_norms_own():
    norm, x = _norm_and_input(*SHAPES[0])
    with torch.no_grad():
        expected = norm(x)
        plain = nn.GroupNorm(32, 64, eps=1e-6).half()
        plain.load_state_dict(norm.state_dict())
        split_group_norms(norm)
        norm.half().split = 8
        ours, theirs = norm(x.half()), plain(x.half())
    assert ours.dtype == torch.float16 and ours.shape == x.shape
    assert _rel(ours, expected) <= 1.5 * _rel(theirs, expected) + 1e-4


def test_the_plain_path_where_a_split_cannot_help_or_must_not_run():
    norm, x = _norm_and_input(*SHAPES[0])
    split_group_norms(nn.Sequential(norm))
    with torch.no_grad():
        assert torch.equal(norm(x), nn.functional.group_norm(x, 32, norm.weight, norm.bias, 1e-6))  # CPU: k = 1
    norm.split = 4
    x.requires_grad_(True)  # with autograd: the plain kernel (batch norm refuses statistics that need gradients)
    assert torch.equal(norm(x), nn.functional.group_norm(x, 32, norm.weight, norm.bias, 1e-6))
    with torch.no_grad():  # exported: GroupNorm itself, as inductor and the engines expect
        exported = torch.export.export(norm.float(), (x.detach().float(),), strict=False)
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "aten.group_norm.default" in ops and not any("batch_norm" in op for op in ops)


@pytest.mark.parametrize(("shape", "groups"), SHAPES[:2])
def test_channels_last_images_normalised_in_place_of_their_layout(shape, groups):
    norm, x = _norm_and_input(shape, groups)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = norm(x)
        split_group_norms(nn.Sequential(norm))
        norm.split = 2  # the CPU takes the channels-last path only when told (CUDA always does)
        ours = norm(x)
        assert _rel(ours, expected) < 1e-12  # fp64 rounding (per-channel statistics combined: a little more)
        assert ours.is_contiguous(memory_format=torch.channels_last) and not ours.is_contiguous()
        assert _rel(norm.float()(x.float()), expected) < 2e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_channels_last_half_statistics_from_fp32_sums_within_the_dtypes_rounding(dtype):
    # half-precision images take their statistics from fp32 sums (mean square - mean^2): a group's mean ~30x its
    # spread cancels, but the error stays within the output's own rounding (statistics rounded to the dtype, as
    # torch.std_mean gives them, land at ~3 epsilons here)
    norm, x = _norm_and_input((2, 64, 16, 16), 32)
    group_offsets = torch.randn(2, 32, 1, 1, 1, dtype=torch.float64) * 100
    x = ((x - x.mean(dim=(2, 3), keepdim=True)).view(2, 32, 2, 16, 16) + group_offsets).view(x.shape)
    with torch.no_grad():
        xh = x.to(dtype)
        expected = norm(xh.double())  # the exact norm of the rounded input
        split_group_norms(nn.Sequential(norm))
        norm.to(dtype).split = 2
        ours = norm(xh.contiguous(memory_format=torch.channels_last))
    assert ours.dtype == dtype and ours.is_contiguous(memory_format=torch.channels_last)
    assert _rel(ours, expected) <= 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize("channels_last", [False, True])
def test_biased_is_the_norm_of_the_sum(channels_last):
    norm, x = _norm_and_input(*SHAPES[0])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(x.shape[1], dtype=x.dtype) * 10  # per channel: it changes the groups' variances
    with torch.no_grad():
        expected = norm(x + bias.view(1, -1, 1, 1))
        split_group_norms(nn.Sequential(norm))
        norm.split = 2
        ours = norm.biased(x, bias)
    assert _rel(ours, expected) < 1e-12
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_split_factor_for_the_shapes_that_matter():
    assert split_factor(4 * 32, 4 * 512 * 512) == 32  # the VAE decoder at 512x512: 128 rows of 1M values
    assert split_factor(16 * 32, 10 * 64 * 64) == 4  # the UNet's 16 frames at 64x64, 320 channels
    assert split_factor(4096, 10 * 64 * 64) == 1  # enough rows already
    assert split_factor(128, 3 * 5000) == 1  # too short to halve
    assert split_factor(8, 3 * 2**20) == 256  # the halves must divide the row exactly


def test_built_networks_carry_split_norms_and_unchanged_keys(tiny_weights):
    vae = build_network("vae", read_sizes(WeightsLayout(tiny_weights)))
    norms = [m for m in vae.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is SplitGroupNorm for m in norms)
    plain = nn.GroupNorm(norms[0].num_groups, norms[0].num_channels)
    assert set(norms[0].state_dict()) == set(plain.state_dict()) == {"weight", "bias"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the batch-norm statistics kernel is CUDA's")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_split_statistics_on_cuda(dtype):
    biased_pairs = []
    for shape, groups in [*SHAPES, ((4, 128, 128, 128), 32)]:
        norm, x = _norm_and_input(shape, groups)
        norm_expected = copy.deepcopy(norm)  # fp64 on the CPU
        with torch.no_grad():
            expected = norm(x).cuda()
            plain = nn.GroupNorm(groups, shape[1], eps=1e-6).to("cuda", dtype)
            plain.load_state_dict(norm.state_dict())
            split_group_norms(norm)
            norm.to("cuda", dtype).split = None if shape[-1] == 128 else 4  # the largest: split_factor's choice
            xc = x.to("cuda", dtype)
            ours, theirs = norm(xc), plain(xc)
            layouts = [(ours, theirs)]
            if x.ndim == 4:  # channels-last images: their own path, the layout kept
                xl = xc.contiguous(memory_format=torch.channels_last)
                layouts.append((norm(xl), theirs))
                assert layouts[-1][0].is_contiguous(memory_format=torch.channels_last)
                # a convolution's bias folded into the statistics: the norm of x + b without the add
                bias = torch.randn(shape[1], dtype=torch.float64) * 10
                biased_expected = norm_expected(x + bias.view(1, -1, 1, 1)).cuda()
                got = norm.biased(xl, bias.to("cuda", dtype))
                assert got.is_contiguous(memory_format=torch.channels_last)
                plain_biased = plain(xc + bias.to("cuda", dtype).view(1, -1, 1, 1))
                biased_pairs.append((got, plain_biased, biased_expected))
        slack = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype]
        for ours, theirs in layouts:
            assert ours.dtype == dtype and ours.shape == x.shape
            assert _rel(ours, expected) <= 1.5 * _rel(theirs, expected) + slack
    for got, theirs, expected in biased_pairs:
        assert _rel(got, expected) <= 1.5 * _rel(theirs, expected) + slack


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the batch-norm statistics kernel is CUDA's")
def test_channels_last_statistics_do_not_overflow_in_fp16():
    # group variances ~1e8, past fp16's range (65504), as the VAE decoder's activations can be: statistics kept in
    # fp16 made every normalised value 0 and the decoded frames nearly flat (call AJ of the twelfth session)
    norm, x = _norm_and_input((4, 64, 32, 32), 32)
    x = x * 300
    bias = torch.randn(64, dtype=torch.float64) * 1000
    with torch.no_grad():
        expected, expected_biased = norm(x).cuda(), norm(x + bias.view(1, -1, 1, 1)).cuda()
        split_group_norms(nn.Sequential(norm))
        norm.to("cuda", torch.float16)
        xl = x.to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)
        got, got_biased = norm(xl), norm.biased(xl, bias.to("cuda", torch.float16))
    for ours, reference in ((got, expected), (got_biased, expected_biased)):
        assert torch.isfinite(ours).all() and ours.float().std() > 0.1
        assert _rel(ours, reference) <= 2e-3
