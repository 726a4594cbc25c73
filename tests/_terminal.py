"""Commands started as from a terminal, whatever started the tests.

A shell's background job (``cmd &``, ``nohup``) starts with SIGINT ignored,
every process it starts inherits that, and Python keeps an ignored SIGINT
ignored: a test that interrupts a command would see it run to the end. The
environment :func:`terminal_env` returns puts a ``sitecustomize`` on
PYTHONPATH that gives SIGINT Python's own handler back, in the command and in
every Python process it starts (its workers).
"""

from __future__ import annotations

import os
from pathlib import Path

SIGINT_AS_IN_A_TERMINAL = """
import signal

signal.signal(signal.SIGINT, signal.default_int_handler)
"""


def terminal_env(directory: Path, extra: str = "", base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with a ``sitecustomize``
    in ``directory`` (made here) first on PYTHONPATH: SIGINT handled as in a
    terminal, then ``extra`` (more code for every process to run at start)."""
    base = dict(os.environ if base is None else base)
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text(SIGINT_AS_IN_A_TERMINAL + extra)
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(directory), base.get("PYTHONPATH")]))
    return base
