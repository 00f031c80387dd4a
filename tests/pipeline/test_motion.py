"""Motion templates: same frames as the video, safe format, refusal of other weights/settings and of bad files."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch

from personalive.errors import InputError
from personalive.motion import FORMAT, MotionTemplate, check_motion, load_motion, save_motion, template_settings
from personalive.pipeline.animate import DrivingInputs
from personalive.pipeline.driving import DrivingPreparer

from .test_driving import _animator, _run, _wide_frames


def _template(frames, an, smoothing=0.0) -> MotionTemplate:
    prep = DrivingPreparer(an, None)
    prep.smooth_keypoints(frames, smoothing)
    inputs = DrivingInputs.cat(list(prep.chunks(frames)))
    meta = {
        "format": FORMAT,
        "frames": len(inputs),
        "rate": "30000/1001",
        "weights_hash": "abc",
        "settings": template_settings(an.config, torch.float32),
    }
    return MotionTemplate(inputs.info, inputs.faces, meta)


@pytest.mark.parametrize("smoothing", [0.0, 1.5])
def test_template_gives_the_same_frames_as_the_video(tmp_path, smoothing):
    frames = _wide_frames(7)
    an = _animator()
    an.config.generation.smoothing = smoothing
    path = tmp_path / "d.motion"
    save_motion(path, _template(frames, an, smoothing))
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header (JSON), not a pickle
    loaded = load_motion(path)
    assert loaded.frames == 7 and loaded.rate == Fraction(30000, 1001)
    prep = DrivingPreparer(_animator(), None)
    prep.smooth_keypoints(frames, smoothing)
    from_video = _run(prep.an, prep.chunks(frames))
    from_template = _run(_animator(), iter([DrivingInputs(loaded.info, loaded.faces)]))
    torch.testing.assert_close(from_template, from_video, rtol=0, atol=0)
    check_motion(path, loaded, "abc", template_settings(an.config, torch.float32))


def test_template_from_other_weights_or_settings_is_refused(tmp_path):
    an = _animator()
    path = tmp_path / "d.motion"
    save_motion(path, _template(_wide_frames(2), an))
    loaded = load_motion(path)
    settings = template_settings(an.config, torch.float32)
    with pytest.raises(InputError, match=r"d.motion: motion template was extracted with other weights"):
        check_motion(path, loaded, "other", settings)
    with pytest.raises(InputError, match=r"extracted with face_crop='auto', this run has 'landmarks'"):
        check_motion(path, loaded, "abc", {**settings, "face_crop": "landmarks"})
    with pytest.raises(InputError, match=r"extracted with dtype='float32', this run has 'float16'"):
        check_motion(path, loaded, "abc", {**settings, "dtype": "float16"})


def test_bad_template_files_are_one_line_input_errors(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.motion"
    junk.write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(InputError, match=r"junk.motion: not a readable motion template"):
        load_motion(junk)
    foreign = tmp_path / "foreign.motion"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match=r"foreign.motion: not a motion template of this version"):
        load_motion(foreign)
    short = tmp_path / "short.motion"
    meta = {"format": FORMAT, "frames": 3}
    save_file(
        {"faces": torch.zeros(2, 3, 4, 4), "info.kp": torch.zeros(2, 63)},
        str(short),
        metadata={"personalive": json.dumps(meta)},
    )
    with pytest.raises(InputError, match=r"short.motion: motion template holds 2 frames, its header says 3"):
        load_motion(short)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.motion", "junk.motion", "short.motion"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    info = {"kp": torch.zeros(1, 63)}
    with pytest.raises(OSError):
        save_motion(tmp_path / "x.motion", MotionTemplate(info, torch.zeros(1, 3, 2, 2), {"format": FORMAT}))
    assert list(tmp_path.iterdir()) == []
