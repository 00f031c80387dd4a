"""The eager attention kernels compute what ``scaled_dot_product_attention`` over the joined keys computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from personalive.models import attention_kernels
from personalive.models.attention_3d import multihead_attention, per_frame, project_reference


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, inner = x.shape
    return x.reshape(n, length, heads, inner // heads).transpose(1, 2)


def _joined(query, key, value, ref_key, ref_value, heads, frames):
    """The reference attention as upstream computes it: the shared tokens repeated for each frame, then SDPA."""
    key = torch.cat([key, per_frame(ref_key, frames)], dim=1)
    value = torch.cat([value, per_frame(ref_value, frames)], dim=1)
    out = F.scaled_dot_product_attention(_heads(query, heads), _heads(key, heads), _heads(value, heads))
    return out.transpose(1, 2).reshape(query.shape)


def _inputs(batch, frames, length, own, shared, inner, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    n = batch * frames
    return (
        draw(n, length, inner),
        draw(n, own, inner),
        draw(n, own, inner),
        draw(batch, shared, inner),
        draw(batch, shared, inner),
    )


@pytest.mark.parametrize(("batch", "frames", "shared"), [(1, 4, 12), (2, 3, 7)])
def test_shared_reference_attention_equals_the_joined_keys(batch, frames, shared):
    query, key, value, ref_key, ref_value = _inputs(batch, frames, 5, 5, shared, 16)
    got = attention_kernels.shared_reference_attention(query, key, value, ref_key, ref_value, heads=2)
    expected = _joined(query, key, value, ref_key, ref_value, 2, frames)
    assert got.shape == expected.shape == (batch * frames, 5, 16)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    # each frame's own tokens matter: the output is not the shared part's alone
    alone = attention_kernels.attention_with_lse(_heads(query, 2), _heads(key, 2), _heads(value, 2))[0]
    assert (got - alone.transpose(1, 2).reshape(got.shape)).abs().max() > 1e-2


def test_attention_with_lse_gives_the_log_sum_exp_of_the_scaled_scores():
    q, k, v = (torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    out, lse = attention_kernels.attention_with_lse(q, k, v)
    scores = q @ k.transpose(-1, -2) / 8**0.5
    assert lse.shape == (2, 3, 6) and lse.dtype == torch.float32
    torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1) @ v, rtol=1e-5, atol=1e-5)


def test_multihead_attention_with_reference_is_the_same_with_the_kernels_off(monkeypatch):
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8, bias=False).eval()
    frames = 3
    hidden = torch.randn(2 * frames, 10, 32)
    reference = project_reference(attn, torch.randn(2, 14, 32))
    with torch.no_grad():
        split = multihead_attention(attn, hidden, reference_kv=reference, num_frames=frames)
        monkeypatch.setattr(attention_kernels, "enabled", False)
        assert not attention_kernels.eager_kernels()
        joined = multihead_attention(attn, hidden, reference_kv=reference, num_frames=frames)
    assert (split - joined).abs().max() <= 1e-5 * joined.abs().max()


class _ReferenceAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention(query_dim=16, heads=2, dim_head=8, bias=False)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return multihead_attention(self.attn, x, reference_kv=reference, num_frames=2)


def _traceable() -> tuple[_ReferenceAttention, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    module = _ReferenceAttention().eval()
    with torch.no_grad():
        return module, torch.randn(4, 6, 16), project_reference(module.attn, torch.randn(2, 5, 16))


def test_traced_attention_keeps_sdpa_over_the_joined_keys():
    # an ONNX or TorchScript trace cannot hold the private operators that return log-sum-exps
    module, hidden, reference = _traceable()
    with torch.no_grad():
        traced = torch.jit.trace(module, (hidden, reference), check_trace=False)
        torch.testing.assert_close(traced(hidden, reference), module(hidden, reference), rtol=1e-5, atol=1e-6)
    ops = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::scaled_dot_product_attention" in ops and "aten::cat" in ops
    assert not any("_scaled_dot_product" in op for op in ops)


def test_exported_attention_keeps_sdpa_over_the_joined_keys():
    # torch.export (the AOTInductor engine's path) traces the joined keys too: inductor picks its own kernels
    module, hidden, reference = _traceable()
    with torch.no_grad():
        exported = torch.export.export(module, (hidden, reference), strict=False)
    ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"aten.scaled_dot_product_attention.default", "aten.cat.default"} <= ops
    assert not any("_scaled_dot_product" in op or "lerp" in op for op in ops)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's and the memory-efficient kernels are CUDA's")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_the_kernels_on_cuda_match_sdpa(dtype):
    query, key, value, ref_key, ref_value = _inputs(1, 16, 256, 256, 1024, 320, "cuda", dtype)
    got = attention_kernels.shared_reference_attention(query, key, value, ref_key, ref_value, heads=8)
    expected = _joined(*(t.float() for t in (query, key, value, ref_key, ref_value)), 8, 16)
    tolerance = {torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5}[dtype]
    assert (got.float() - expected).abs().max() <= tolerance * expected.abs().max()
    q, k, v = (torch.randn(512, 8, 16, 40, device="cuda", dtype=dtype) for _ in range(3))
    short = attention_kernels.short_sequence_attention(q, k, v)
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert (short.float() - exact).abs().max() <= tolerance * exact.abs().max()
