"""Encoder settings are checked against this FFmpeg build, naming the key and the allowed values."""

from __future__ import annotations

import pytest

from personalive.errors import ConfigError
from personalive.media.encoder import check_encoder_settings


def test_known_settings_pass():
    check_encoder_settings("libx264", "yuv420p", "medium")
    check_encoder_settings("libx264", "yuv444p", "veryslow")


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "preset", "message"),
    [
        ("libx999", "yuv420p", "medium", "media.codec='libx999': not a video encoder of this FFmpeg build"),
        ("aac", "yuv420p", "medium", "media.codec='aac': not a video encoder"),
        ("libx264", "rgb24", "medium", "media.pix_fmt='rgb24': libx264 does not encode it (expected one of yuv420p"),
        ("libx264", "yuv420p", "warp", "media.preset='warp': expected one of ultrafast, superfast"),
    ],
)
def test_bad_settings_name_the_key_and_the_choices(codec, pix_fmt, preset, message):
    with pytest.raises(ConfigError) as info:
        check_encoder_settings(codec, pix_fmt, preset)
    assert str(info.value).startswith(message) and ConfigError.exit_code == 2
