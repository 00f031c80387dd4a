"""``media.face_crop=landmarks`` against upstream's own ``crop_face`` on the same frames (oracle + faces extra).

Upstream's ``src/utils/util.py`` imports torch, torchvision, einops, cv2 and av at module level; only its two
functions ``crop_face`` and ``scale_bb`` are needed (they use numpy), so they are taken from the oracle's
checkout of upstream's source by name and run unchanged, with the same FaceMesh object as ours.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
from PIL import Image

from personalive.faces.crop import landmark_patch, patch_pixels
from tests.conftest import ROOT
from tests.faces.synth import photo, wide_clip, wide_frame

pytestmark = [pytest.mark.faces, pytest.mark.oracle]

UPSTREAM_UTIL = ROOT / ".oracle" / "upstream" / "src" / "utils" / "util.py"


def _upstream_functions() -> dict:
    if not UPSTREAM_UTIL.is_file():
        pytest.skip(f"upstream source not found at {UPSTREAM_UTIL}")
    tree = ast.parse(UPSTREAM_UTIL.read_text())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("crop_face", "scale_bb")]
    assert len(wanted) == 2
    namespace = {"np": np}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(UPSTREAM_UTIL), "exec"), namespace)  # noqa: S102
    return namespace


def _frames() -> list[np.ndarray]:
    clip, _ = wide_clip(8)
    border, _ = wide_frame(480 - 130, 270 - 150, 1.0)
    top_left, _ = wide_frame(0, 0, 1.2)
    return [photo("astronaut"), photo("camera"), border, top_left, *clip]


def test_landmark_crop_equals_upstream_crop_face():
    from personalive.faces.finder import FaceFinder

    upstream = _upstream_functions()
    with FaceFinder() as finder:
        for i, frame in enumerate(_frames()):
            theirs = upstream["crop_face"](Image.fromarray(frame), finder._mesh)
            ours = landmark_patch(frame, finder.landmarks(frame))
            assert ours.shape == theirs.shape, i
            np.testing.assert_array_equal(ours, theirs)
            # and the 224x224 motion-encoder pixels as upstream's VaeImageProcessor makes them
            from diffusers.image_processor import VaeImageProcessor

            processor = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=True)
            want = processor.preprocess(Image.fromarray(theirs).convert("RGB"), height=224, width=224)[0]
            np.testing.assert_array_equal(patch_pixels(ours).numpy(), want.numpy())
