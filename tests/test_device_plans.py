"""cuDNN plan books: what a block's first calls record, replayed exactly; books by key; never an error."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from personalive.device_plans import PlanBook, _Recorder, book_path, plan_key, replay


class _Block(nn.Module):
    """Convolutions of three shapes (one layer called twice), a linear layer and an attention."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.b(self.a(x)))
        x = self.c(x)
        tokens = self.proj(x.flatten(2).transpose(1, 2))  # (N, 64, 16)
        heads = tokens.view(tokens.shape[0], -1, 2, 8).transpose(1, 2)
        return F.scaled_dot_product_attention(heads, heads, heads)


def _record(block: nn.Module, x: torch.Tensor, book: PlanBook, label: str = "reference") -> torch.Tensor:
    with torch.inference_mode(), book.recording(label):
        return block(x)


def test_a_block_records_each_planned_call_once():
    """Counted another way: forward hooks see the convolutions' input shapes; the recorder keeps one call per
    distinct (layer configuration, input layout), plus the linear layer and the attention."""
    torch.manual_seed(0)
    block, x = _Block(), torch.randn(2, 4, 16, 16)
    seen = set()
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.add((m.weight.shape, m.stride, tuple(i[0].shape))))
        for m in (block.a, block.b, block.c)
    ]
    book = PlanBook()
    _record(block, x, book)
    for h in hooks:
        h.remove()
    calls = book.groups["reference"]
    convs = [c for c in calls if c["op"].startswith("aten.conv")]
    assert len(convs) == len(seen) == 3  # block.b twice on the same shape: once
    assert sorted(tuple(c["args"][0]["t"]) for c in convs) == sorted(s[2] for s in seen)
    assert {c["op"] for c in calls} - {c["op"] for c in convs} == {
        "aten.linear.default",
        "aten.scaled_dot_product_attention.default",
    }
    assert book.dirty and book.recording_seconds > 0


def test_recording_changes_no_result_and_a_label_is_recorded_once():
    torch.manual_seed(0)
    block, x = _Block(), torch.randn(2, 4, 16, 16)
    with torch.inference_mode():
        plain = block(x)
    book = PlanBook()
    assert torch.equal(_record(block, x, book), plain)
    first = book.groups["reference"]
    _record(block, torch.randn(1, 4, 32, 32), book)  # same label, other shapes: not recorded again
    assert book.groups["reference"] is first
    _record(block, torch.randn(1, 4, 32, 32), book, "window:1")
    assert list(book.groups) == ["reference", "window:1"]


def test_only_the_named_labels_are_recorded():
    book = PlanBook(only=("reference", "driving"))
    _record(_Block(), torch.randn(1, 4, 16, 16), book, "window:0")
    _record(_Block(), torch.randn(1, 4, 16, 16), book, "driving")
    assert list(book.groups) == ["driving"]


def test_the_replay_repeats_the_recorded_calls_exactly():
    """A second recorder around the (Python) replay sees the same operators with the same shapes, strides, storage
    offsets and dtypes, in the same order."""
    torch.manual_seed(0)
    book = PlanBook()
    _record(_Block(), torch.randn(2, 4, 16, 16), book)
    with torch.inference_mode():
        sliced = torch.randn(3, 8, 10, 10)[1:]  # a storage offset, as a view of a larger tensor has
        with book.recording("driving"):
            F.conv2d(sliced, torch.randn(8, 8, 3, 3), padding=1)
    again = _Recorder()
    generator = torch.get_rng_state()
    with again:
        done, error = replay(book, torch.device("cpu"), script=False)
    assert error is None and done == len(book) == len(again.calls)
    assert again.calls == [c for calls in book.groups.values() for c in calls]
    assert book.groups["driving"][0]["args"][0]["o"] == 800
    assert torch.equal(torch.get_rng_state(), generator)  # uninitialised tensors, never random ones


def test_a_stale_book_stops_quietly():
    book = PlanBook()
    book.groups["reference"] = [
        {"op": "aten.mm.default", "args": [{"t": [2, 3], "s": [3, 1], "o": 0, "d": "torch.float32"}] * 2, "kwargs": {}}
    ]
    done, error = replay(book, torch.device("cpu"), script=False)
    assert done == 0 and "mat1 and mat2 shapes cannot be multiplied" in error
    done, error = replay(book, torch.device("cpu"))
    assert done == 0 and error


def test_a_book_is_saved_and_loaded_by_its_key(tmp_path):
    key = {"torch": torch.__version__, "generation": [512, 512, 4, 4, 3]}
    path = book_path(tmp_path / "plans", key)
    book = PlanBook.load(path, key)
    assert book.groups == {} and not path.exists()
    _record(_Block(), torch.randn(1, 4, 16, 16), book)
    book.save()
    assert json.loads(path.read_text())["key"] == key and not book.dirty
    assert PlanBook.load(path, key).groups == book.groups
    assert PlanBook.load(path, {**key, "torch": "0.0"}).groups == {}  # another key: not used
    path.write_text("{not json")
    assert PlanBook.load(path, key).groups == {}  # unreadable: as if absent
    assert book_path(tmp_path, key) != book_path(tmp_path, {**key, "generation": [256, 256, 4, 4, 3]})


def test_an_unwritable_cache_is_not_an_error(tmp_path):
    (tmp_path / "plans").write_text("a file where the folder should be")
    book = PlanBook(tmp_path / "plans" / "x.json")
    _record(_Block(), torch.randn(1, 4, 16, 16), book)
    book.save()
    assert book.dirty


def test_the_key_names_what_the_shapes_depend_on():
    from personalive.config import RunConfig

    config = RunConfig()
    key = plan_key(config, torch.device("cpu"), torch.float16, {"unet": [320, 640]})
    config.generation.height = 256
    other = plan_key(config, torch.device("cpu"), torch.float16, {"unet": [320, 640]})
    assert key["generation"] != other["generation"] and key["dtype"] == "torch.float16"
    assert plan_key(RunConfig(), torch.device("cpu"), torch.float16, {"unet": [320, 1280]})["sizes"] != key["sizes"]


def test_the_script_replay_makes_the_same_calls_as_the_python_one():
    """The replay's TorchScript path (no interpreter lock while it runs) calls the same operators on the same
    layouts as the Python path; composite convolutions come back as the convolution they are."""
    for mode in (torch.inference_mode, torch.no_grad):
        book = PlanBook()
        with mode(), book.recording("reference"):
            _Block()(torch.randn(2, 4, 16, 16))
        seen = {}
        for script in (False, True):
            recorder = _Recorder()
            with recorder:
                assert replay(book, torch.device("cpu"), script=script) == (len(book), None)
            ops = [c["op"].replace("aten.conv2d.", "aten.convolution.") for c in recorder.calls]
            seen[script] = sorted(zip(ops, (json.dumps(c["args"][:2]) for c in recorder.calls), strict=True))
        assert seen[True] == seen[False] and len(seen[True]) == len(book)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's attention and convolutions need a CUDA device")
def test_the_script_replay_on_cuda_repeats_the_recorded_calls():
    device = torch.device("cuda")
    block = _Block().to(device, torch.float16)
    for mode in (torch.inference_mode, torch.no_grad):
        book = PlanBook()
        with mode(), book.recording("reference"):
            block(torch.randn(2, 4, 16, 16, device=device, dtype=torch.float16))
        recorder = _Recorder()
        with recorder:
            assert replay(book, device) == (len(book), None)
        ops = {c["op"].replace("aten.conv2d.", "aten.convolution.") for c in recorder.calls}
        assert ops == {c["op"].replace("aten.conv2d.", "aten.convolution.") for c in book.groups["reference"]}
