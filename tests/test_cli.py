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


_CHILD = """
import atexit, sys
marker = sys.argv.pop(1)
atexit.register(lambda: open(marker, "w").close())  # the interpreter's teardown would run this
from personalive.cli import main
main()
"""


def test_the_command_exits_with_its_status_and_output_without_the_teardown(tmp_path):
    """``main`` ends the process itself (no module-by-module teardown: ~2 s a command), after everything is
    written: all of stdout, the one-line error, the command's exit status."""
    from pathlib import Path

    from personalive.errors import InputError

    def child(*args: str) -> subprocess.CompletedProcess:
        marker = tmp_path / "teardown-ran"
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(marker), *args], capture_output=True, text=True)
        assert not marker.exists()  # exited before the teardown
        return proc

    shown = child("config", "show")
    assert shown.returncode == 0
    generated = (Path(__file__).parents[1] / "configs" / "default.yaml").read_text()
    assert shown.stdout == "".join(line + "\n" for line in generated.splitlines() if not line.startswith("#"))
    missing = child("animate", "--ref", str(tmp_path / "nope.png"), "--drive", str(tmp_path / "nope.mp4"))
    assert missing.returncode == InputError.exit_code == 2, missing.stderr
    assert "nope.png" in missing.stderr and "Traceback" not in missing.stderr
    usage = child("animate", "--no-such-option")
    assert usage.returncode == 2 and "--no-such-option" in usage.stderr
    # Ctrl-C's 130 through the same exit: test_animate_cli.test_signal_leaves_no_file
