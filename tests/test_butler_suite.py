"""The Butler tests, run in a Python that has the Rubin packages.

``tests/butler`` needs bgdask[butler], whose Rubin packages need Python >=
3.12. Where this interpreter lacks them (the default Python of these
machines is 3.11), this test runs ``tests/butler`` with the interpreter named
by ``BGDASK_BUTLER_PYTHON`` (a venv that ``bash .ci/butler-env`` makes),
importing this checkout's bgdask. Where this interpreter has them, conftest
collects ``tests/butler`` directly and leaves this file out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_butler_tests_pass_in_a_python_with_the_rubin_packages():
    python = os.environ.get("BGDASK_BUTLER_PYTHON")
    if not python:
        why = ("the Butler tests need a Python >= 3.12 with bgdask[butler]: make one with "
               "`bash .ci/butler-env` and set BGDASK_BUTLER_PYTHON to its python")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/butler"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"\ntests/butler under {python}: {summary}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "passed" in summary and "skipped" not in summary, summary
