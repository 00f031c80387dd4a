"""The streaming loop: frame counts, streaming, determinism, keyframes, no-face frames, bounded memory."""

from __future__ import annotations

import gc

import pytest
import torch

from personalive.backends.eager import EagerWindowStep
from personalive.config import RunConfig
from personalive.pipeline.animate import Animator

from .stubs import stub_models

SIZE = 64


def _animator(models=None, overlap=None, **generation) -> Animator:
    config = RunConfig()
    config.generation.height = config.generation.width = SIZE
    for key, value in generation.items():
        setattr(config.generation, key, value)
    models = models or stub_models()
    return Animator(models, config, EagerWindowStep.from_models(models, config, models.device), overlap=overlap)


def _frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(SIZE, SIZE, 3, generator=g)
    return [((base * 0.8 + 0.02 * i) * 255).clamp(0, 255).to(torch.uint8) for i in range(n)]


def _reference():
    return (torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(9)) * 255).to(torch.uint8)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 17])
def test_one_output_frame_per_input_frame(n):
    an = _animator()
    out = list(an.animate(an.fuse_reference(_reference()), iter(_frames(n))))
    assert len(out) == n
    assert all(f.shape == (SIZE, SIZE, 3) and f.dtype == torch.uint8 and f.device.type == "cpu" for f in out)
    assert an.stats.frames == n


def test_tail_padding_does_not_change_earlier_frames():
    """Frames 0..15 of a 16-frame and a 17-frame video are equal up to the windows the tail influences."""
    an = _animator(history_keyframes=False)
    ref = an.fuse_reference(_reference())
    frames = _frames(17)
    a = list(an.animate(ref, iter(frames[:16]), generator=torch.Generator().manual_seed(1)))
    b = list(an.animate(ref, iter(frames), generator=torch.Generator().manual_seed(1)))
    # window i emits frames 4(i-3)..; frames 0..3 come out before any tail window could differ
    for i in range(4):
        assert torch.equal(a[i], b[i])


def test_same_seed_same_frames_other_seed_differs():
    an = _animator()
    ref = an.fuse_reference(_reference())

    def run(seed):
        return torch.stack(list(an.animate(ref, iter(_frames(6)), generator=torch.Generator().manual_seed(seed))))

    first, again, other = run(3), run(3), run(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_default_generator_uses_config_seed():
    an = _animator(seed=5)
    ref = an.fuse_reference(_reference())
    default = torch.stack(list(an.animate(ref, iter(_frames(4)))))
    explicit = torch.stack(list(an.animate(ref, iter(_frames(4)), generator=torch.Generator().manual_seed(5))))
    assert torch.equal(default, explicit)


def test_frames_are_streamed_before_input_is_exhausted():
    an = _animator()
    ref = an.fuse_reference(_reference())
    consumed = []

    def source():
        for i, frame in enumerate(_frames(40)):
            consumed.append(i)
            yield frame

    stream = an.animate(ref, source())
    next(stream)
    # the first frame leaves after A windows of W frames (16), long before frame 40 is read
    assert len(consumed) == 16


@pytest.mark.parametrize("n", [1, 5, 17, 40])
def test_overlap_hands_frames_out_one_window_later_and_changes_nothing_else(n):
    """With overlap a window's frames leave once the next window is queued; the frames and keyframes are equal."""
    frames = _frames(n) if n < 40 else [f.flip(0) if i > 20 else f for i, f in enumerate(_frames(n))]  # a jump
    runs = {}
    for overlap in (False, True):
        an = _animator(overlap=overlap, keyframe_threshold=1.0)
        ref = an.fuse_reference(_reference())
        consumed = []

        def source(consumed=consumed):
            for i, frame in enumerate(frames):
                consumed.append(i)
                yield frame

        stream = an.animate(ref, source())
        first = next(stream)
        at_first = len(consumed)
        runs[overlap] = ([first, *stream], at_first, an.stats.keyframe_windows)
    (plain, plain_at, plain_kf), (over, over_at, over_kf) = runs[False], runs[True]
    assert len(over) == len(plain) == n and all(torch.equal(a, b) for a, b in zip(over, plain, strict=True))
    assert over_kf == plain_kf and (n < 40 or plain_kf)
    if n == 40:
        assert (plain_at, over_at) == (16, 20)  # one window (4 frames) more read before the first frame leaves


def _keyframe_run(frames, **generation):
    an = _animator(**generation)
    ref = an.fuse_reference(_reference())
    out = list(an.animate(ref, iter(frames)))
    return an, out


def test_keyframe_added_on_motion_jump_not_when_static():
    static = [_reference()] * 48  # the reference itself: motion tokens equal to the bank's first entry
    an, _ = _keyframe_run(static)
    assert an.keyframes_added == 0
    jumpy = [_reference()] * 36 + [255 - _reference()] * 12  # a big change of appearance -> far motion tokens
    an, _ = _keyframe_run(jumpy)
    assert 1 <= an.keyframes_added <= 3
    assert min(an.stats.keyframe_windows) >= 9


def test_keyframes_capped_and_disabled():
    flicker = [f if i % 2 else 255 - f for i, f in enumerate(_frames(48))]
    an, _ = _keyframe_run(flicker, keyframe_threshold=0.0)
    assert an.keyframes_added == 3  # max_keyframes default
    an, _ = _keyframe_run(flicker, keyframe_threshold=0.0, max_keyframes=1)
    assert an.keyframes_added == 1
    an, _ = _keyframe_run(flicker, keyframe_threshold=0.0, history_keyframes=False)
    assert an.keyframes_added == 0


def test_reference_state_not_modified_by_keyframes():
    an = _animator(keyframe_threshold=0.0)
    ref = an.fuse_reference(_reference())
    shapes = [f.shape for f in ref.features]
    list(an.animate(ref, iter(_frames(48))))
    assert an.keyframes_added > 0
    assert [f.shape for f in ref.features] == shapes


def test_black_frames_pass():
    black = [torch.zeros(SIZE, SIZE, 3, dtype=torch.uint8)] * 5
    an = _animator()
    out = list(an.animate(an.fuse_reference(black[0]), iter(black)))
    assert len(out) == 5


def _live_tensor_bytes() -> int:
    gc.collect()
    return sum(o.numel() * o.element_size() for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_memory_does_not_grow_with_video_length():
    an = _animator(history_keyframes=False)
    ref = an.fuse_reference(_reference())

    def peak(n: int) -> int:
        base = _frames(1)[0]
        lazy = ((base.int() + i % 7).clamp(0, 255).to(torch.uint8) for i in range(n))  # inputs not held by the test
        most = 0
        for i, _ in enumerate(an.animate(ref, lazy)):
            if i % 8 == 4:
                most = max(most, _live_tensor_bytes())
        return most

    # 24 vs 64 frames: a leak of one (3, 64, 64) float frame per input frame would add 40 x 48 KiB
    short, long = peak(24), peak(64)
    assert long <= short + 256 * 1024, (short, long)


def test_the_first_calls_are_recorded_per_keyframe_count_and_change_nothing():
    """The plan book gets the reference fusion, the first driving preparation and the first window at each
    keyframe count (each count gives the attention new shapes); the frames are those of a run without it."""
    from personalive.device_plans import PlanBook

    flicker = [f if i % 2 else 255 - f for i, f in enumerate(_frames(48))]
    plain = _animator(keyframe_threshold=0.0)
    expected = list(plain.animate(plain.fuse_reference(_reference()), iter(flicker)))
    recorded = _animator(keyframe_threshold=0.0)
    recorded.plans = book = PlanBook()
    out = list(recorded.animate(recorded.fuse_reference(_reference()), iter(flicker)))
    assert all(torch.equal(a, b) for a, b in zip(out, expected, strict=True))
    assert list(book.groups) == ["reference", "driving", "window:0", "window:1", "window:2", "window:3"]
    assert book.groups["reference"] and book.groups["window:0"]
    # a call is kept once in the book, under the first label that made it
    signatures = [str(call) for calls in book.groups.values() for call in calls]
    assert len(signatures) == len(set(signatures))


def test_every_window_step_input_is_an_inference_tensor():
    # torch.compile guards on whether an input is an inference tensor: a step fed plain tensors in one window and
    # inference tensors (its own outputs, the keyframes' features) in another recompiles the whole UNet mid-run
    an = _animator(keyframe_threshold=0.0)
    plain: list[tuple[int, str]] = []

    class Recording:  # the step, noting which inputs of which window are plain tensors
        def __init__(self, step):
            self.step = step

        def __getattr__(self, name):
            return getattr(self.step, name)

        def __call__(self, inputs):
            plain.extend((an.stats.windows, name) for name, t in inputs.items() if not t.is_inference())
            return self.step(inputs)

    an.step = Recording(an.step)
    ref = an.fuse_reference(_reference())
    out = list(an.animate(ref, iter(_frames(48))))
    assert an.keyframes_added > 0 and len(out) == 48
    assert plain == [], sorted(set(plain))[:20]
