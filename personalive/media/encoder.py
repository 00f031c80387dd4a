"""The output encoder's settings (``media.codec``, ``media.pix_fmt``, ``media.preset``), checked against what this
PyAV/FFmpeg build offers, so a typo fails with the allowed values before any model loads rather than when the
first frame is encoded."""

from __future__ import annotations

from personalive.errors import ConfigError

# x264 and x265 share these speed presets (``x264 --fullhelp``, ``x265 --help``); other encoders get no preset
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
PRESET_CODECS = ("libx264", "libx265")  # the encoders the sink passes ``preset`` and ``crf`` to
COMMON_ENCODERS = ("libx264", "libx265", "h264_nvenc", "hevc_nvenc", "libvpx-vp9", "libsvtav1", "mpeg4")


def video_encoders() -> list[str]:
    """Well-known video encoders of this FFmpeg build (for messages)."""
    import av

    return [name for name in COMMON_ENCODERS if name in av.codecs_available]


def check_encoder_settings(codec: str, pix_fmt: str, preset: str) -> None:
    """Raise :class:`ConfigError` naming the key and the allowed values when the encoder cannot take a setting."""
    import av

    try:
        found = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        found = None
    if found is None or found.type != "video":
        raise ConfigError(
            f"media.codec={codec!r}: not a video encoder of this FFmpeg build "
            f"(available: {', '.join(video_encoders())})"
        )
    formats = [f.name for f in (found.video_formats or [])]
    if formats and pix_fmt not in formats:
        raise ConfigError(
            f"media.pix_fmt={pix_fmt!r}: {codec} does not encode it (expected one of {', '.join(formats)})"
        )
    if codec in PRESET_CODECS and preset not in X26X_PRESETS:
        raise ConfigError(f"media.preset={preset!r}: expected one of {', '.join(X26X_PRESETS)}")
