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
where it waits for the suite and checks its result. Under pytest-xdist the
controller starts it, once, when the first worker has collected this test;
the worker that runs the test waits for it through the files of its
directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: seconds the test waits for the suite
TIMEOUT = 1200


def start(directory: Path) -> subprocess.Popen | None:
    """Start ``tests/butler`` under ``BGDASK_BUTLER_PYTHON`` (None if unset).
    ``directory`` receives ``python`` (the interpreter, written first),
    ``pid``, ``output`` (the suite's output) and, once the suite has ended,
    ``returncode``, so that whichever process runs the test (a pytest-xdist
    worker, or the process that started it) can wait for it there."""
    python = os.environ.get("BGDASK_BUTLER_PYTHON")
    if not python:
        return None
    directory = Path(directory)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(directory / "output", "w") as out:
        proc = subprocess.Popen([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/butler"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    (directory / "pid").write_text(str(proc.pid))
    (directory / "python").write_text(python)

    def record_exit():
        returncode = proc.wait()
        (directory / "returncode.part").write_text(str(returncode))
        os.replace(directory / "returncode.part", directory / "returncode")

    threading.Thread(target=record_exit, name="butler-suite", daemon=True).start()
    return proc


def _started(request) -> Path | None:
    """The directory of the suite conftest started (this process or the
    pytest-xdist controller), else of one started now; None without
    ``BGDASK_BUTLER_PYTHON``."""
    given = getattr(request.config, "workerinput", {}).get("bgdask_butler_suite")
    for directory in (getattr(request.config, "_bgdask_butler_dir", None), given and Path(given)):
        if directory is not None and (directory / "python").exists():
            return directory
    directory = Path(tempfile.mkdtemp(prefix="bgdask-butler-suite-"))
    request.config.add_cleanup(lambda: stop(directory, remove=True))
    return directory if start(directory) else None


def stop(directory: Path, remove: bool) -> None:
    """Kill the suite of ``directory`` if it still runs; remove the directory if asked."""
    pid = directory / "pid"
    if pid.exists() and not (directory / "returncode").exists():
        try:
            os.kill(int(pid.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(100):     # the starting process reaps it and records its exit
            if (directory / "returncode").exists():
                break
            time.sleep(0.05)
    if remove:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_the_butler_tests_pass_in_a_python_with_the_rubin_packages(request):
    directory = _started(request)
    if directory is None:
        why = ("the Butler tests need a Python >= 3.12 with bgdask[butler]: make one with "
               "`bash .ci/butler-env` and set BGDASK_BUTLER_PYTHON to its python")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    python = (directory / "python").read_text()
    deadline = time.monotonic() + TIMEOUT
    while not (directory / "returncode").exists():
        if time.monotonic() > deadline:
            stop(directory, remove=False)
            pytest.fail(f"tests/butler under {python} did not end within {TIMEOUT} s:\n"
                        f"{(directory / 'output').read_text()[-9000:]}")
        time.sleep(0.5)
    returncode = int((directory / "returncode").read_text())
    text = (directory / "output").read_text()
    summary = (text.strip().splitlines() or [""])[-1]
    print(f"\ntests/butler under {python}: {summary}")
    assert returncode == 0, text[-9000:]
    assert "passed" in summary and "skipped" not in summary, summary
