"""What the command line writes to stderr when it is read by scripts: one message, one line.

* :class:`OneLineErrors` (the Typer group class of the app): Click/Typer usage errors (a bad option value, a
  missing or unknown option) become ``error: OPTION: what is wrong (see `personalive CMD --help`)`` with exit
  code 2, instead of a six-line box.
* :class:`OneLineFormatter`: the log format used when stderr is not a terminal: ``level: message`` on one line,
  never wrapped at 80 columns, newlines inside a message folded (a traceback, with ``--verbose``, follows).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
import typer.core

try:  # Typer >= 0.2x carries its own copy of Click; older Typer uses the click package
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import exceptions as click_errors


def _flat(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def usage_error_line(exc: Exception) -> str:
    """One line for a Click error: the option first, then what is wrong, then where the help is."""
    ctx = getattr(exc, "ctx", None)
    see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    if isinstance(exc, click_errors.NoSuchOption):
        maybe = f"; did you mean {', '.join(sorted(exc.possibilities))}?" if exc.possibilities else ""
        return f"error: {exc.option_name}: no such option{maybe}{see}"
    if isinstance(exc, click_errors.MissingParameter):
        name = _param_name(exc, ctx) or "argument"
        return f"error: {name}: required, but not given{see}"
    if isinstance(exc, click_errors.BadParameter):
        name = _param_name(exc, ctx)
        if name:
            return f"error: {name}: {_flat(exc.message).rstrip('.')}{see}"
    return f"error: {_flat(exc.format_message()).rstrip('.')}{see}"


def _param_name(exc: Any, ctx: Any) -> str | None:
    if exc.param_hint is not None:
        hint = exc.param_hint if isinstance(exc.param_hint, str) else " / ".join(exc.param_hint)
        return hint.strip("'\"")
    if exc.param is not None:
        if getattr(exc.param, "param_type_name", "") == "option":
            return max(exc.param.opts, key=len)  # the long form: --max-frames rather than -m
        return exc.param.metavar or (exc.param.name or "argument").upper()  # an argument, e.g. MANIFEST
    return None


class OneLineErrors(typer.core.TyperGroup):
    """A Typer group whose usage errors are one line on stderr (exit 2) rather than a rich box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()  # the help text, as Click prints it
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            typer.echo(usage_error_line(exc), err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class OneLineFormatter(logging.Formatter):
    """``level: message`` on one line (for logs read by scripts); a traceback, when attached, follows it."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname.lower()}: {_flat(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
