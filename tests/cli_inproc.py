"""Test helper: the real `edgebench` entry point run in-process (fast enough for hundreds of calls).

`edgebench.cli.main` is what the console script runs: the same argument parsing and the same
single error printer; only the interpreter start-up is skipped.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass

import pytest
import typer

import edgebench.cli
from edgebench.cli import main
from edgebench.cli._common import state

# Typer builds the click command from the app on every call (~0.1 s); build it once. main() calls
# it exactly as it calls the Typer app: app(standalone_mode=False), arguments from sys.argv.
_COMMAND = typer.main.get_command(edgebench.cli.app)


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The one `edgebench: error:` line of a refusal (asserts there is exactly one line)."""
        lines = self.stderr.splitlines()
        assert self.code not in (0, 70), (self.code, self.stderr)
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("edgebench: error: "), self.stderr
        assert "internal error" not in lines[0] and "Traceback" not in self.stderr, self.stderr
        return lines[0]


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with monkeypatch.context() as m:
        m.setattr(edgebench.cli, "app", _COMMAND)
        m.setattr(sys, "argv", ["edgebench", *args])
        m.setattr(sys, "stdout", out)
        m.setattr(sys, "stderr", err)
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            if state._store is not None:
                with contextlib.suppress(Exception):
                    state._store.close()
                state._store = None
            state._config = None
    return Result(code, out.getvalue(), err.getvalue())
