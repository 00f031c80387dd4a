"""build-engine --format compile-cache: inductor's compiled step saved with a sidecar, found, checked and loaded by
--backend compile. The build itself compiles (minutes on a CPU): that test is slow (PERSONALIVE_RUN_SLOW=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from personalive.backends import artifacts
from personalive.backends import compile_cache_engine as cc
from personalive.backends.torch_artifacts import device_facts
from personalive.config import ModelDtype, RunConfig
from personalive.errors import EngineMismatchError, InputError

from .sidecars import cpu_sidecar

ROOT = Path(__file__).resolve().parents[2]


def _sidecar(**changes) -> artifacts.Sidecar:
    return cpu_sidecar(cc.KIND, **changes)


def test_a_cache_built_for_another_torch_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "step.ptcache"
    with pytest.raises(EngineMismatchError, match="torch_version differs: built for '1.0'"):
        cc.check_cache(_sidecar(torch_version="1.0"), path, torch.device("cpu"), rebuild="personalive build-engine")


def test_a_sidecar_of_another_kind_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a compile cache"):
        cc.check_cache(_sidecar(kind="aoti"), tmp_path / "x.ptcache", torch.device("cpu"), rebuild="r")


def test_a_missing_engine_file_names_the_rebuild_command(tmp_path):
    config = RunConfig()
    models = type("M", (), {"weights_hash": "0" * 64})()
    with pytest.raises(InputError, match="file not found; build one with `personalive build-engine"):
        cc.find_cache(models, config, torch.device("cpu"), tmp_path / "absent.ptcache")


def test_no_cache_at_the_default_path_means_compiling_from_scratch(tmp_path):
    config = RunConfig()
    config.runtime.engine_dir = str(tmp_path)
    models = type("M", (), {"weights_hash": "0" * 64})()
    assert cc.find_cache(models, config, torch.device("cpu"), None) is None


def test_a_damaged_cache_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "x.ptcache"
    path.write_bytes(b"not a cache")
    with pytest.raises(cc.CompileCacheError, match="not a compile cache torch can load"):
        cc.load_cache(path)


def test_default_path_names_device_and_torch_version():
    facts = device_facts(torch.device("cpu"))
    subset = artifacts.config_subset(RunConfig())
    path = cc.default_cache_path("engines", "ab" * 32, subset, "fp16", 3, facts)
    assert path.suffix == ".ptcache" and "-cpu-torch" in path.name and path.parent == Path("engines")


CHILD = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, sys.argv[2])
    from pipeline.stubs import stub_models
    from torch._dynamo.utils import counters
    from personalive.backends.compiled import CompiledWindowStep
    from personalive.config import ModelDtype, RunConfig
    from personalive.pipeline.window import example_window_inputs
    config = RunConfig()
    config.generation.height = config.generation.width = 64
    config.model.dtype = ModelDtype.fp32
    models = stub_models()
    models.weights_hash = "0" * 64
    from personalive.backends.verify import strict_fp32
    with strict_fp32():  # as verify-engine computes its reference before the file runs: it must leave no trace
        pass
    step = CompiledWindowStep.from_models(models, config, torch.device("cpu"), engine=sys.argv[1])
    generator = torch.Generator().manual_seed(5)
    inputs = example_window_inputs(models, config, torch.device("cpu"), torch.float32, 0, generator)
    torch.save(step(inputs), sys.argv[3])
    c = counters["inductor"]
    print(json.dumps({"hits": c["fxgraph_cache_hit"], "misses": c["fxgraph_cache_miss"]}))
    """
)


@pytest.mark.slow
def test_a_new_process_loads_the_cache_and_compiles_nothing_again(tmp_path, monkeypatch):
    """Build from the stand-in networks; a fresh process with an empty inductor cache folder loads the file: every
    FX graph is a cache hit (after a verify-engine reference block, too), and its outputs equal the eager step's."""
    from pipeline.stubs import stub_models

    from personalive.backends.eager import EagerWindowStep
    from personalive.pipeline.window import example_window_inputs

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-build"))
    config = RunConfig()
    config.generation.height = config.generation.width = 64
    config.model.dtype = ModelDtype.fp32
    models = stub_models()
    models.weights_hash = "0" * 64
    path = tmp_path / "step.ptcache"
    from personalive.backends.compiled import CompiledWindowStep

    torch.compiler.reset()
    step = CompiledWindowStep.from_models(models, config, torch.device("cpu"))
    meta = cc.build_cache(
        step, models, config, path, precision="fp32", k=3, device=torch.device("cpu"), build_command="b"
    )
    artifacts.write_sidecar(path, meta)
    assert path.stat().st_size > 0 and meta.kind == cc.KIND and meta.extra["cache_bytes"] == path.stat().st_size

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-fresh"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(ROOT / "tests"), str(tmp_path / "out.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["hits"] > 0 and counts["misses"] == 0, counts

    eager = EagerWindowStep.from_models(models, config, torch.device("cpu"))
    inputs = example_window_inputs(
        models, config, torch.device("cpu"), torch.float32, 0, torch.Generator().manual_seed(5)
    )
    expected, actual = eager(inputs), torch.load(tmp_path / "out.pt")
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
