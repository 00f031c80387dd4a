"""build-engine --format precompiled: the window step compiled ahead of time (torch.compile's aot_compile), saved
with a sidecar, found and checked by --backend compile, loaded without tracing. A toy function compiles in
seconds (default suite); the window step over the stand-in networks in a fresh process, and the real tiny
networks through the CLI, are slow (PERSONALIVE_RUN_SLOW=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from personalive.backends import artifacts
from personalive.backends import precompiled as pc
from personalive.backends.torch_artifacts import device_facts
from personalive.config import ModelDtype, RunConfig
from personalive.errors import EngineMismatchError, InputError, MissingDependencyError

from .sidecars import cpu_sidecar

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def _sidecar(**changes) -> artifacts.Sidecar:
    return cpu_sidecar(pc.KIND, **{"extra": pc.code_facts(), **changes})


def _entry(guard_type: str, derived=(), is_global=False, name="latents"):
    return SimpleNamespace(guard_type=guard_type, derived_guard_types=derived, is_global=is_global, name=name)


def test_the_guard_filter_keeps_the_inputs_guards_and_drops_identity_global_and_module_guards():
    weight = "self._modules['vae']._modules['conv']._parameters['weight']"
    entries = [
        _entry("TENSOR_MATCH"),
        _entry("ID_MATCH"),
        _entry("TYPE_MATCH", derived=("FUNCTION_MATCH",)),
        _entry("TYPE_MATCH", is_global=True),
        _entry("SHAPE_ENV", name=""),
        _entry("GRAD_MODE", name=""),
        _entry("GLOBAL_STATE", name=""),
        _entry("TENSOR_MATCH", name="reference_features[3]"),
        _entry("TENSOR_MATCH", name=weight),
        _entry("EMPTY_NN_MODULE_HOOKS_DICT", name="self._modules['vae']._forward_hooks"),
        _entry("CONSTANT_MATCH", name="dict(type(self._modules['unet']).__dict__)['fast_layout']"),
        _entry("CONSTANT_MATCH", name="list(dict.keys(self._modules['vae'].__dict__['_internal_dict']))[0]"),
        _entry("DICT_KEYS_MATCH", name="self._modules"),  # dynamo rebuilds the rest from these at load
        _entry("TENSOR_MATCH", name="selfie"),
    ]
    kept = [True, False, False, False, True, True, False, True, False, False, False, False, True, True]
    assert pc.keep_serializable(entries) == kept


def test_the_module_layout_follows_each_tensors_shape_strides_dtype_and_the_training_flags(tmp_path):
    module = Toy().eval()
    built = pc.module_layout(module)
    pc.check_layout(module, built, tmp_path / "s.ptstep", "rebuild it")
    changes = [
        lambda m: setattr(m.lin, "weight", nn.Parameter(m.lin.weight.detach().t().contiguous().t())),  # strides
        lambda m: m.double(),
        lambda m: m.lin.train(),
        lambda m: m.register_buffer("extra", torch.zeros(1)),
    ]
    for change in changes:
        other = Toy().eval()
        other.load_state_dict(module.state_dict())
        assert pc.module_layout(other) == built  # the values do not count, only the layout
        change(other)
        with pytest.raises(EngineMismatchError, match=r"s.ptstep: the networks' parameters differ .*`rebuild it`"):
            pc.check_layout(other, built, tmp_path / "s.ptstep", "rebuild it")
    with pytest.raises(EngineMismatchError):  # a sidecar without the fingerprint
        pc.check_layout(module, None, tmp_path / "s.ptstep", "rebuild it")


def test_a_step_built_from_other_sources_is_refused_with_the_rebuild_command(tmp_path):
    meta = _sidecar(extra={**pc.code_facts(), "source_hash": "f" * 64})
    with pytest.raises(EngineMismatchError, match="this package's sources differ.*rebuild with `rebuild me`"):
        pc.check_step(meta, tmp_path / "x.ptstep", CPU, rebuild="rebuild me")


def test_a_step_built_for_another_python_or_torch_is_refused_naming_it(tmp_path):
    with pytest.raises(EngineMismatchError, match="python_version differs: built for '2.7'"):
        pc.check_step(_sidecar(extra={**pc.code_facts(), "python_version": "2.7"}), tmp_path / "x", CPU, rebuild="r")
    with pytest.raises(EngineMismatchError, match="torch_version differs: built for '1.0'"):
        pc.check_step(_sidecar(torch_version="1.0"), tmp_path / "x", CPU, rebuild="r")
    pc.check_step(_sidecar(), tmp_path / "x", CPU, rebuild="r")  # this machine's own facts pass


def test_a_sidecar_of_another_kind_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a precompiled step"):
        pc.check_step(_sidecar(kind="compile-cache"), tmp_path / "x.ptstep", CPU, rebuild="r")


def test_the_source_hash_follows_every_source_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    first = pc.source_hash(tmp_path)
    assert pc.source_hash(tmp_path) == first
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert pc.source_hash(tmp_path) != first
    assert pc.source_hash() == pc.code_facts()["source_hash"] != first


def test_a_missing_engine_file_names_the_rebuild_command(tmp_path):
    models = SimpleNamespace(weights_hash="0" * 64)
    with pytest.raises(
        InputError, match="file not found; build one with `personalive build-engine.*--format precompiled"
    ):
        pc.find_step(models, RunConfig(), CPU, tmp_path / "absent.ptstep")


def test_no_file_at_the_default_path_means_compiling_as_before(tmp_path):
    config = RunConfig()
    config.runtime.engine_dir = str(tmp_path)
    assert pc.find_step(SimpleNamespace(weights_hash="0" * 64), config, CPU, None) is None
    assert pc.find_step(SimpleNamespace(), config, CPU, None) is None  # networks not from a weights folder


def test_default_path_names_device_torch_and_python():
    subset = artifacts.config_subset(RunConfig())
    path = pc.default_step_path("engines", "ab" * 32, subset, "fp16", 3, device_facts(CPU))
    python = f"-py{sys.version_info.major}{sys.version_info.minor}.ptstep"
    assert path.parent == Path("engines") and "-cpu-torch" in path.name and path.name.endswith(python)


def test_a_damaged_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "x.ptstep"
    path.write_bytes(b"not a compiled function")
    with pytest.raises(pc.PrecompileError, match=r"x.ptstep: not a precompiled step this torch can load \("):
        pc.load(path, {})


def test_a_torch_without_aot_compile_is_refused_before_any_work(monkeypatch):
    monkeypatch.delattr(torch.compiler, "load_compiled_function")
    with pytest.raises(MissingDependencyError, match="cannot precompile the window step.*--format compile-cache"):
        pc.check_supported()


def test_the_failed_guard_is_named_from_dynamos_message():
    exc = RuntimeError(
        "GuardManager check failed, reason: GuardDebugInfo( result=0, verbose_code_parts=[\"tensor 'L['x']' "
        'dtype mismatch. expected Float, actual Double"], num_guards_executed=5)'
    )
    assert pc.failed_guard(exc) == "tensor 'L['x']' dtype mismatch. expected Float, actual Double"
    assert pc.failed_guard(RuntimeError("GuardManager check failed")) == "GuardManager check failed"


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.lin(x) + tokens.mean(1, keepdim=True)).relu(), tokens * 2


def test_a_toy_function_compiled_saved_and_loaded_runs_every_token_count_and_refuses_other_inputs(tmp_path):
    """The mechanics the window step relies on: module as an argument, a dynamic axis, inference tensors under
    no_grad, the file loaded back (in this process; the fresh process is the slow test's), guards enforced."""
    torch.manual_seed(0)
    module = Toy().eval()
    with torch.inference_mode():
        x, tokens = torch.randn(1, 3, 8), torch.randn(2, 5, 8)
    compiled = pc.precompile(Toy.forward, (module, x, tokens), [(2, 1)])
    path = tmp_path / "toy.ptstep"
    assert pc.save(compiled, path) == path.stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp"))
    loaded = pc.load(path, vars(sys.modules[__name__]))
    for count in (5, 2, 9):
        with torch.inference_mode():
            other = torch.randn(2, count, 8)
            inside = pc.call(loaded, (module, x, other), path, "rebuild it")  # as the stream calls it
        with torch.no_grad():
            expected = module(x, other)
        actual = pc.call(loaded, (module, x, other), path, "rebuild it")
        torch.testing.assert_close(inside[0], expected[0])
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e)
    threads = torch.get_num_threads()  # a job run with other threads (taskset, OMP_NUM_THREADS) than the build
    torch.set_num_threads(threads + 1)
    try:
        with torch.no_grad():
            expected = module(x, tokens)
        torch.testing.assert_close(pc.call(loaded, (module, x, tokens), path, "rebuild it")[0], expected[0])
    finally:
        torch.set_num_threads(threads)
    with torch.inference_mode():
        wrong = x.double()
    with pytest.raises(EngineMismatchError, match=r"toy.ptstep: the precompiled step refuses this call \(.*dtype"):
        pc.call(loaded, (module, wrong, tokens), path, "rebuild it")
    plain = torch.randn(1, 3, 8)  # not an inference tensor: refused as such, accepted once copied
    with pytest.raises(EngineMismatchError, match="dispatch key"):
        pc.call(loaded, (module, plain, tokens), path, "rebuild it")
    pc.call(loaded, (module, pc.as_traced(plain), tokens), path, "rebuild it")
    with torch.inference_mode():  # a slice of a longer tensor, as the job feeds back: other strides
        sliced = torch.randn(1, 3, 16)[..., 4:12]
    with pytest.raises(EngineMismatchError, match="stride"):
        pc.call(loaded, (module, sliced, tokens), path, "rebuild it")
    actual = pc.call(loaded, (module, pc.as_traced(sliced), tokens), path, "rebuild it")
    with torch.no_grad():
        torch.testing.assert_close(actual[0], module(sliced, tokens)[0])
    with torch.inference_mode():  # contiguous by is_contiguous() (a size-1 axis), not by the guards' strides
        drawn = torch.randn(96).as_strided((1, 3, 8), (96, 8, 1))
    assert drawn.is_contiguous()
    with pytest.raises(EngineMismatchError, match="stride"):
        pc.call(loaded, (module, drawn, tokens), path, "rebuild it")
    pc.call(loaded, (module, pc.as_traced(drawn), tokens), path, "rebuild it")
    # the module's own guards are not in the file (see keep_serializable); a parameter re-laid after the load (the
    # load's layout check passed) is still refused, by inductor's assert on the graph's inputs, not run wrong
    weight = module.lin.weight
    module.lin.weight = nn.Parameter(weight.detach().t().contiguous().t())
    with pytest.raises(EngineMismatchError, match=r"toy.ptstep: the precompiled step refuses this call \(.*stride"):
        pc.call(loaded, (module, x, tokens), path, "rebuild it")
    module.lin.weight = weight


def test_backend_compile_prefers_a_precompiled_step_at_the_default_path_unless_given_another_engine(
    tmp_path, monkeypatch
):
    from pipeline.stubs import stub_models

    from personalive.backends import compile_cache_engine as cc
    from personalive.backends.compiled import CompiledWindowStep
    from personalive.pipeline.window import build_window_module

    config = RunConfig()
    config.generation.height = config.generation.width = 64
    config.model.dtype = ModelDtype.fp32
    config.runtime.engine_dir = str(tmp_path)
    models = stub_models(full_graph=True)
    models.weights_hash = "0" * 64
    subset = artifacts.config_subset(config)
    default = pc.default_step_path(tmp_path, models.weights_hash, subset, "fp32", 3, device_facts(CPU))
    default.write_bytes(b"stand-in")
    layout = pc.module_layout(build_window_module(models, config).eval())
    artifacts.write_sidecar(default, _sidecar(config=subset, extra={**pc.code_facts(), "module_layout": layout}))
    monkeypatch.setattr(pc, "load", lambda path, f_globals: ("loaded", path))
    step = CompiledWindowStep.from_models(models, config, CPU)
    assert isinstance(step, pc.PrecompiledWindowStep) and step.compiled == ("loaded", default)

    cache = tmp_path / "given.ptcache"  # an explicit --engine of another kind wins over the default .ptstep
    cache.write_bytes(b"stand-in")
    artifacts.write_sidecar(cache, _sidecar(kind=cc.KIND, config=subset))
    loaded = []
    monkeypatch.setattr(cc, "load_cache", loaded.append)
    step = CompiledWindowStep.from_models(models, config, CPU, engine=cache)
    assert type(step) is CompiledWindowStep and loaded == [cache]


def test_read_artifact_sidecar_takes_every_engine_kind(tmp_path):
    for suffix in (".ptstep", ".ptcache"):
        path = tmp_path / f"x{suffix}"
        path.write_bytes(b"")
        artifacts.write_sidecar(path, _sidecar())
        assert artifacts.read_artifact_sidecar(path).kind == pc.KIND
    with pytest.raises(InputError, match=r"expected a \.onnx .* or \.ptstep \(precompiled step\) file"):
        (tmp_path / "x.bin").write_bytes(b"")
        artifacts.read_artifact_sidecar(tmp_path / "x.bin")


CHILD = textwrap.dedent(
    """
    import json, sys, time, torch
    sys.path.insert(0, sys.argv[2])
    from pipeline.stubs import stub_models
    from torch._dynamo.utils import counters
    from backends.test_precompiled import frames, reference
    from personalive.backends.compiled import CompiledWindowStep
    from personalive.config import ModelDtype, RunConfig
    from personalive.pipeline.animate import Animator
    from personalive.pipeline.window import example_window_inputs
    config = RunConfig()
    config.generation.height = config.generation.width = 64
    config.model.dtype = ModelDtype.fp32
    models = stub_models(full_graph=True)
    models.weights_hash = "0" * 64
    t0 = time.perf_counter()
    step = CompiledWindowStep.from_models(models, config, torch.device("cpu"), engine=sys.argv[1])
    load_s = time.perf_counter() - t0
    outputs = {}
    for k in (0, 1, 3):
        with torch.inference_mode():
            inputs = example_window_inputs(models, config, torch.device("cpu"), torch.float32, k,
                                           torch.Generator().manual_seed(5 + k))
        outputs[k] = step(inputs)
    # the stream: each window's inputs are the last one's outputs (slices among them) and the keyframes grow
    animator = Animator(models, config, step)
    stream = list(animator.animate(animator.fuse_reference(reference()), iter(frames())))
    torch.save({"steps": outputs, "stream": torch.stack(stream)}, sys.argv[3])
    report = {"step": type(step).__name__, "traced": sum(counters["frames"].values()), "load_s": load_s}
    print(json.dumps({**report, "keyframes": animator.stats.keyframes_added}))
    """
)


def frames() -> list[torch.Tensor]:
    """48 frames whose last 12 change appearance: far motion tokens, so history keyframes are added."""
    return [reference()] * 36 + [255 - reference()] * 12


def reference() -> torch.Tensor:
    return (torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(9)) * 255).to(torch.uint8)


@pytest.mark.slow
def test_a_new_process_runs_the_precompiled_step_without_tracing(tmp_path):
    """Build from the stand-in networks; a fresh process's --backend compile takes the file, traces nothing, and
    its outputs at 0, 1 and 3 keyframes (one file, dynamic token axis) equal the eager step's."""
    from pipeline.stubs import stub_models

    from personalive.backends.eager import EagerWindowStep
    from personalive.pipeline.animate import Animator
    from personalive.pipeline.window import example_window_inputs

    config = RunConfig()
    config.generation.height = config.generation.width = 64
    config.model.dtype = ModelDtype.fp32
    models = stub_models(full_graph=True)
    models.weights_hash = "0" * 64
    path = tmp_path / "step.ptstep"
    meta = pc.build_step(models, config, path, precision="fp32", k=3, device=CPU, build_command="b")
    artifacts.write_sidecar(path, meta)
    assert meta.kind == pc.KIND and meta.extra["bytes"] == path.stat().st_size and meta.max_keyframes == 3
    assert [spec.shape[1] for spec in meta.inputs if spec.name.startswith("ref_")][0] == -1  # the dynamic axis

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor-fresh"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(ROOT / "tests"), str(tmp_path / "out.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["step"] == "PrecompiledWindowStep" and report["traced"] == 0, report

    eager = EagerWindowStep.from_models(models, config, CPU)
    actual = torch.load(tmp_path / "out.pt")
    for k in (0, 1, 3):
        with torch.inference_mode():
            inputs = example_window_inputs(models, config, CPU, torch.float32, k, torch.Generator().manual_seed(5 + k))
        for name, tensor in eager(inputs).items():
            got = actual["steps"][k][name]
            torch.testing.assert_close(got, tensor, rtol=1e-4, atol=1e-4, msg=f"{name} at {k} keyframes")
    animator = Animator(models, config, eager)
    expected = torch.stack(list(animator.animate(animator.fuse_reference(reference()), iter(frames()))))
    assert report["keyframes"] == animator.stats.keyframes_added > 0
    assert actual["stream"].shape == expected.shape == (48, 64, 64, 3)
    assert (actual["stream"].short() - expected.short()).abs().max() <= 1  # uint8 rounding of fp32 noise


@pytest.mark.slow
def test_build_engine_precompiled_on_the_tiny_networks_verifies_here_and_in_a_new_process(tiny_weights, tmp_path):
    """The real networks trace as one graph: build-engine --format precompiled --verify (fp32, CPU, 128x128: 64x64
    gives a 1-token reference feature, which dynamo specialises), then verify-engine in a fresh process."""
    from typer.testing import CliRunner

    from personalive.cli import app
    from personalive.weights import weights_hash

    engines = tmp_path / "engines"
    args = ["build-engine", "--format", "precompiled", "--weights", str(tiny_weights), "--height", "128"]
    args += ["--width", "128", "--max-keyframes", "1", "--dtype", "fp32", "--device", "cpu"]
    args += ["--set", f"runtime.engine_dir={engines}", "--verify"]
    result = CliRunner().invoke(app, args)
    files = sorted(engines.glob(f"*{pc.SUFFIX}"))
    assert result.exit_code == 0 and len(files) == 1, (result.output[-3000:], list(engines.rglob("*")))
    assert "all 6 outputs within tolerance" in " ".join(result.output.split())  # rich pads wrapped lines
    meta = artifacts.read_sidecar(files[0])
    assert meta.kind == pc.KIND and meta.weights_hash == weights_hash(tiny_weights) and meta.max_keyframes == 1
    assert meta.extra["source_hash"] == pc.source_hash() and meta.device_type == "cpu"

    command = [sys.executable, "-m", "personalive.cli", "verify-engine", str(files[0]), "--weights", str(tiny_weights)]
    fresh = subprocess.run(
        [*command, "--device", "cpu", "--draws", "2"], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "all 6 outputs within tolerance" in " ".join((fresh.stdout + fresh.stderr).split())

    # the whole job in a new process: --backend compile finds the file, and its video is the eager backend's
    import av
    import numpy as np
    from media.synth import make_video
    from PIL import Image

    Image.fromarray(np.full((96, 96, 3), (220, 170, 140), np.uint8)).save(tmp_path / "face.png")
    drive = make_video(tmp_path / "drive.mp4", frames=6, width=96, height=96)
    videos = {}
    for backend in ("compile", "eager"):
        out = tmp_path / f"{backend}.mp4"
        job = [sys.executable, "-m", "personalive.cli", "animate", "--ref", str(tmp_path / "face.png"), "--drive"]
        job += [str(drive), "-o", str(out), "--weights", str(tiny_weights), "--device", "cpu", "--dtype", "fp32"]
        job += ["--backend", backend, "--set", "generation.height=128", "--set", "generation.width=128"]
        job += ["--set", "generation.max_keyframes=1", "--set", f"runtime.engine_dir={engines}", "--no-audio"]
        job += ["--set", "media.crf=0", "--set", "media.pix_fmt=yuv444p"]  # lossless: the frames as generated
        wide = {**os.environ, "COLUMNS": "400"}  # log lines unwrapped
        ran = subprocess.run(job, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=wide)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert (f"precompiled step {files[0]} loaded" in " ".join(ran.stderr.split())) == (backend == "compile")
        with av.open(str(out)) as container:
            videos[backend] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert videos["compile"].shape == videos["eager"].shape == (6, 128, 128, 3)
    difference = np.abs(videos["compile"].astype(np.int16) - videos["eager"].astype(np.int16))
    # one level of an 8-bit channel, through the encoder's RGB -> YUV -> RGB, is up to 3 (measured 3, mean 1.6e-4)
    assert difference.max() <= 4 and difference.mean() < 0.01, (difference.mean(), difference.max())
    assert videos["eager"].std() > 1


def test_build_engine_precompiled_refuses_onnx_only_and_a_wrong_suffix(tiny_weights, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from personalive.cli import app

    monkeypatch.setattr("personalive.weights.load_models", lambda *a, **k: pytest.fail("models loaded"))

    base = ["build-engine", "--format", "precompiled", "--weights", str(tiny_weights), "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--onnx-only"])
    assert result.exit_code == 2 and "--onnx-only: only with --format tensorrt" in result.output
    result = CliRunner().invoke(app, [*base, "--dtype", "fp32", "--out", str(tmp_path / "step.pt2")])
    assert result.exit_code == 2 and "a precompiled step is a .ptstep file" in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())
