"""The `edgebench` command: a Typer app, one module per command group, errors in one place."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import typer
from pydantic import ValidationError

from edgebench.cli import _context as _context
from edgebench.cli import _decide as _decide
from edgebench.cli import _doctor as _doctor
from edgebench.cli import _fleet as _fleet
from edgebench.cli import _kv as _kv
from edgebench.cli import _models as _models
from edgebench.cli import _plan as _plan
from edgebench.cli import _quality as _quality
from edgebench.cli import _quant as _quant
from edgebench.cli import _results as _results
from edgebench.cli import _run as _run
from edgebench.cli import _runtime as _runtime
from edgebench.cli import _serve as _serve
from edgebench.cli import _sweep as _sweep
from edgebench.cli._common import app, err_console, state
from edgebench.errors import EdgebenchError, validation_message
from edgebench.textsafe import one_line

__all__ = ["app", "main"]

_doctor.register(app)
_plan.register(app)
_sweep.register(app)
_context.register(app)
_kv.register(app)
_fleet.register(app)
_decide.register(app)
_run.register(app)
_serve.register(app)
app.add_typer(_runtime.app, name="runtime")
app.add_typer(_models.app, name="models")
app.add_typer(_quality.app, name="quality")
app.add_typer(_quant.app, name="quant")
app.add_typer(_results.app, name="results")


def _debug() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("EDGEBENCH_DEBUG") == "1"


def _fail(msg: str, code: int) -> None:
    # rich markup off: messages carry paths and brackets verbatim. one_line: they also carry
    # untrusted text (GGUF names, file names, llama.cpp output) that must not drive the terminal.
    err_console.print(f"edgebench: error: {one_line(msg)}", markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(code)


class _Interrupted(BaseException):
    """Ctrl-C. Typer turns KeyboardInterrupt into a silent exit 130; this passes through it."""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted


def main() -> None:
    """Entry point: every failure leaves as one `edgebench: error: …` line and a non-zero code."""
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread (an embedding caller): Python's own handling
        previous = None
    try:
        try:
            rv = app(standalone_mode=False)
        finally:
            state.release()  # the host lock, before any error is printed
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if isinstance(rv, int) and rv:
            raise SystemExit(rv)
    except EdgebenchError as exc:
        if _debug():
            raise
        _fail(str(exc), 1)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt, _Interrupted):
        _fail("interrupted", 130)  # what was measured so far is stored already
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":
            err_console.print(exc.format_message(), markup=False, highlight=False)
            raise SystemExit(2) from None
        _fail(f"{exc.format_message()} (see --help)", exc.exit_code)
    except ValidationError as exc:  # a record built from a value no option check caught
        if _debug():
            raise
        _fail(validation_message(exc), 1)
    except Exception as exc:  # a bug of ours: still one line, the traceback behind --debug
        if _debug():
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", 70)
