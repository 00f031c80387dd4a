"""The CUDA library warm-up beside loading: no thread off CUDA, never the run's random numbers, never an error."""

from __future__ import annotations

import pytest
import torch

from personalive import device_warmup
from personalive.device_warmup import LibraryWarmup, warm_libraries


def test_the_warm_up_leaves_the_random_generator_alone():
    """The run's noise is drawn from torch's generators: a warm-up that drew from them would change the output
    depending on when it ran."""
    before = torch.get_rng_state()
    warm_libraries(torch.device("cpu"), [torch.float32, torch.bfloat16])
    assert torch.equal(torch.get_rng_state(), before)


def test_no_thread_off_cuda():
    with LibraryWarmup(torch.device("cpu"), [torch.float32]) as warmup:
        assert warmup.thread is None
    assert warmup.waited == 0.0 and warmup.error is None


def test_a_failing_warm_up_is_recorded_not_raised(monkeypatch):
    def broken(device, dtypes):
        raise RuntimeError("CUDA error: out of memory\nmore")

    monkeypatch.setattr(device_warmup, "warm_libraries", broken)
    warmup = LibraryWarmup(torch.device("cpu"), [torch.float16])
    warmup._run()
    assert warmup.error == "CUDA error: out of memory"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the warm-up thread runs on CUDA devices only")
def test_the_thread_ends_with_the_block_on_cuda():
    before = torch.cuda.get_rng_state()
    with LibraryWarmup(torch.device("cuda"), [torch.float16, torch.float32]) as warmup:
        thread = warmup.thread
        assert thread is not None
    assert not thread.is_alive() and warmup.error is None and warmup.seconds > 0
    assert torch.equal(torch.cuda.get_rng_state(), before)
