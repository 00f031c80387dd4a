"""The verification harness itself: the fp32 reference is computed as IEEE fp32 (TF32 off), flags restored."""

from __future__ import annotations

import torch

from personalive.backends.verify import reference_cases, strict_fp32


def _flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_the_reference_runs_with_tf32_off_and_the_flags_come_back():
    # PyTorch's default lets cuDNN convolutions use TF32, ~1e-3 off fp32: too coarse for an fp32 reference
    seen, saved = [], _flags()

    def reference(inputs):
        seen.append((inputs["k"], _flags()))
        return {"y": inputs["x"] * 2}

    def make_inputs(keyframes, generator):
        return {"x": torch.randn(3, generator=generator), "k": keyframes}

    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        cases = reference_cases(reference, make_inputs, 3, 2, torch.Generator().manual_seed(0))
        assert _flags() == (True, True)
        assert seen == [(0, (False, False)), (2, (False, False)), (1, (False, False))]
        assert [c.keyframes for c in cases] == [0, 2, 1]
        for case in cases:
            torch.testing.assert_close(case.expected["y"], case.inputs["x"] * 2)
        # restored on an error too
        try:
            with strict_fp32():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert _flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
