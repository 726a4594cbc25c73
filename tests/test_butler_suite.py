"""The Butler tests, run in a Python that has the Rubin packages.

``tests/butler`` needs bgdask[butler], whose Rubin packages need Python >=
3.12. Where this interpreter lacks them (the default Python of these
machines is 3.11), this test runs ``tests/butler`` with the interpreter named
by ``BGDASK_BUTLER_PYTHON`` (a venv that ``bash .ci/butler-env`` makes),
importing this checkout's bgdask. Where this interpreter has them, conftest
collects ``tests/butler`` directly and leaves this file out.

The suite is a separate process that waits on its Butler and pipetask
subprocesses much of the time, so conftest starts it (:func:`start`) as soon
as this test is collected, and moves this test to the end of the session,
where it waits for the suite and checks its result.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start() -> tuple[subprocess.Popen, str, object] | None:
    """Start ``tests/butler`` under ``BGDASK_BUTLER_PYTHON`` (None if unset):
    the process, the interpreter, and the file its output goes to."""
    python = os.environ.get("BGDASK_BUTLER_PYTHON")
    if not python:
        return None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/butler"],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return proc, python, out


@pytest.mark.slow
def test_the_butler_tests_pass_in_a_python_with_the_rubin_packages(request):
    started = getattr(request.config, "_bgdask_butler_suite", None) or start()
    if started is None:
        why = ("the Butler tests need a Python >= 3.12 with bgdask[butler]: make one with "
               "`bash .ci/butler-env` and set BGDASK_BUTLER_PYTHON to its python")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    proc, python, out = started
    try:
        returncode = proc.wait(timeout=1200)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    out.seek(0)
    text = out.read()
    summary = (text.strip().splitlines() or [""])[-1]
    print(f"\ntests/butler under {python}: {summary}")
    assert returncode == 0, text[-9000:]
    assert "passed" in summary and "skipped" not in summary, summary
