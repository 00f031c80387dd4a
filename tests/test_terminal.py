"""One message, one line: usage errors, log lines without a terminal, signals during cleanup."""

from __future__ import annotations

import logging

import pytest
import typer
from typer.testing import CliRunner

from personalive.terminal import OneLineErrors, OneLineFormatter


def _toy() -> typer.Typer:
    app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False)

    @app.command()
    def animate(
        ref: str = typer.Option(..., "--ref"),
        max_frames: int = typer.Option(None, "--max-frames", "-m"),
    ) -> None:
        typer.echo(f"ok {ref} {max_frames}")

    @app.command()
    def other() -> None:
        raise typer.Exit(3)

    return app


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["animate", "--ref", "a", "--max-frames", "abc"], "error: --max-frames: Input should be a valid integer"),
        (["animate", "--ref", "a", "-m", "abc"], "error: --max-frames: Input should be a valid integer"),
        (["animate"], "error: --ref: required, but not given"),
        (
            ["animate", "--ref", "a", "--max-frame", "3"],
            "error: --max-frame: no such option; did you mean --max-frames?",
        ),
        (["animate", "--ref", "a", "extra"], "error: Got unexpected extra argument(s) (extra)"),
        (["nope"], "error: No such command 'nope'"),
    ],
)
def test_usage_errors_are_one_line(args, line):
    result = CliRunner().invoke(_toy(), args, env={"COLUMNS": "60"})
    assert result.exit_code == 2
    [only] = result.output.strip().splitlines()
    assert only.startswith(line), only
    assert only.endswith("--help`)") and "╭" not in result.output


def test_success_exit_codes_and_help_are_kept():
    app = _toy()
    assert CliRunner().invoke(app, ["animate", "--ref", "a", "-m", "2"]).output == "ok a 2\n"
    assert CliRunner().invoke(app, ["other"]).exit_code == 3
    assert CliRunner().invoke(app, ["animate", "--help"]).exit_code == 0
    result = CliRunner().invoke(app, [])
    assert "animate" in result.output and "Usage" in result.output


def test_formatter_keeps_a_message_on_one_line():
    long = "x" * 300
    record = logging.LogRecord("personalive", logging.WARNING, __file__, 1, "%s: bad\nthing %s", ("a.mp4", long), None)
    assert OneLineFormatter().format(record) == f"warning: a.mp4: bad thing {long}"
