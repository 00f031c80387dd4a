import subprocess
import sys

from typer.testing import CliRunner

from personalive.cli import app

runner = CliRunner()


def test_help_lists_all_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("animate", "batch", "build-engine", "verify-engine", "weights", "info"):
        assert name in result.output
    weights = runner.invoke(app, ["weights", "--help"])
    for name in ("download", "check", "init-random"):
        assert name in weights.output


def test_every_command_has_help():
    for cmd in (["animate"], ["batch"], ["build-engine"], ["verify-engine"], ["info"], ["weights", "check"]):
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0, cmd
        assert "Usage" in result.output


def test_info_reports_versions_and_devices():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    for name in ("python", "torch", "diffusers", "transformers", "av", "onnx", "tensorrt", "cuda"):
        assert name in result.output


def test_importing_the_package_loads_no_torch():
    code = "import sys, personalive, personalive.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bad_set_is_a_usage_error_without_traceback(tmp_path):
    result = runner.invoke(app, ["animate", "--ref", "x.png", "--drive", "y.mp4", "--set", "generation.nope=1"])
    assert result.exit_code == 2
    assert "unknown config key 'generation.nope'" in result.output
    assert "Traceback" not in result.output
