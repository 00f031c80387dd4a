"""The device warm-up beside loading's imports: imports on a helper thread (CUDA), the warm-up on the caller's
thread, never the run's random numbers, never an error of its own, an import error raised as it happened."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

from personalive import device_warmup
from personalive.device_plans import PlanBook
from personalive.device_warmup import DeviceWarmup, warm_libraries


def test_the_warm_up_leaves_the_random_generator_alone():
    """The run's noise is drawn from torch's generators: a warm-up that drew from them would change the output
    depending on when it ran."""
    before = torch.get_rng_state()
    warm_libraries(torch.device("cpu"), [torch.float32, torch.bfloat16])
    assert torch.equal(torch.get_rng_state(), before)


def test_off_cuda_the_imports_run_here_and_nothing_warms_up():
    where = []
    warmup = DeviceWarmup(torch.device("cpu"), [torch.float32])
    warmup.beside(lambda: where.append(threading.current_thread()))
    assert where == [threading.current_thread()]
    assert warmup.seconds == 0.0 and warmup.replayed == 0 and warmup.error is None


def test_the_imports_run_on_a_helper_thread_while_the_plans_replay_here():
    """The plans must be made on the thread that runs the networks (PyTorch's cuDNN plan caches are per thread):
    the replay is on the caller's thread, the imports elsewhere."""
    book = PlanBook()
    with book.recording("reference"), torch.inference_mode():
        F.conv2d(torch.ones(1, 4, 8, 8), torch.ones(6, 4, 3, 3), padding=1)
    where = []
    warmup = DeviceWarmup(torch.device("cpu"), [torch.float32], book, thread=True)
    warmup.beside(lambda: where.append(threading.current_thread()))
    assert where and where[0] is not threading.current_thread()
    assert warmup.replayed == 1 and warmup.error is None and warmup.seconds > 0


def test_an_import_error_reaches_the_caller():
    def imports():
        raise ImportError("No module named 'diffusers'")

    with pytest.raises(ImportError, match="diffusers"):
        DeviceWarmup(torch.device("cpu"), [torch.float32], thread=True).beside(imports)


def test_a_failing_warm_up_is_recorded_not_raised(monkeypatch):
    def broken(device, dtypes):
        raise RuntimeError("CUDA error: out of memory\nmore")

    monkeypatch.setattr(device_warmup, "warm_libraries", broken)
    warmup = DeviceWarmup(torch.device("cpu"), [torch.float16], thread=True)
    warmup.beside(lambda: None)
    assert warmup.error == "CUDA error: out of memory"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the warm-up runs on CUDA devices only")
def test_the_warm_up_on_cuda_leaves_the_generator_and_ends_with_the_imports():
    before = torch.cuda.get_rng_state()
    done = threading.Event()
    warmup = DeviceWarmup(torch.device("cuda"), [torch.float16, torch.float32])
    warmup.beside(done.set)
    assert done.is_set() and warmup.error is None and warmup.seconds > 0
    assert torch.equal(torch.cuda.get_rng_state(), before)
