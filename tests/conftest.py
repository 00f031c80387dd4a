"""Shared fixtures and markers: gpu / tensorrt / slow / oracle tests skip with a reason."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE_TINY = ROOT / ".oracle" / "out" / "oracle-tiny"


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def _faces() -> bool:
    from personalive.faces.finder import faces_available

    return faces_available()


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    run_slow = os.environ.get("PERSONALIVE_RUN_SLOW") == "1"
    has_faces = _faces()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set PERSONALIVE_RUN_SLOW=1 to run it"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none visible"))
        if "tensorrt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs the tensorrt package and a CUDA GPU"))
        if item.get_closest_marker("faces") and not has_faces:
            item.add_marker(pytest.mark.skip(reason="needs the face finder: pip install 'personalive[faces]'"))
        if "oracle" in item.keywords and not ORACLE_TINY.is_dir():
            item.add_marker(pytest.mark.skip(reason="no upstream oracle bundle in .oracle/out/oracle-tiny"))


@pytest.fixture
def oracle_dir() -> Path:
    return ORACLE_TINY


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Tiny random weights (seed 0) in the official layout, written once per test session; do not modify."""
    from personalive.random_weights import init_random_weights

    return init_random_weights(tmp_path_factory.mktemp("tiny_weights") / "pretrained_weights", "tiny", seed=0)
