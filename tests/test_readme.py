"""Every code block of the README works.

``bash`` and ``python`` blocks run, in order, in one temporary directory (as
a reader who pastes them would); ``shell`` blocks (they need a cluster or a
container engine) are parsed: their ``bgdask`` and ``dask`` commands must be
accepted by the real argument parsers, and the files they name must exist.
The README's first block holds the two commands a new user runs: the install
lines are not repeated here (this test runs in an installed checkout) but
``bgdask demo`` runs.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", README, re.S)]


def commands(text: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        parts = shlex.split(line, comments=True)
        if parts:
            out.append(line)
    return out


def test_the_first_block_is_install_demo_and_test():
    kind, text = BLOCKS[0]
    assert kind == "bash"
    lines = [shlex.split(c, comments=True) for c in commands(text)]
    assert lines[0] == ["pip", "install", "-e", ".", "&&", "bgdask", "demo"]
    assert lines[1] == ["pip", "install", "-e", ".[test]", "&&", "python", "-m", "pytest", "-q", "-n", "auto"]


@pytest.mark.slow(70)
def test_bash_and_python_blocks_run_in_order(tmp_path):
    steps = []
    for kind, text in BLOCKS[1:]:
        if kind == "bash":
            steps += [("bash", c) for c in commands(text)]
        elif kind == "python":
            steps.append(("python", text))
    steps.insert(0, ("bash", "bgdask demo -o demo --no-progress"))
    assert any(k == "python" for k, _ in steps) and len(steps) > 5
    for n, (kind, text) in enumerate(steps):
        if kind == "bash":
            cmd = ["bash", "-ec", text]
        else:
            script = tmp_path / f"block{n}.py"
            script.write_text(text)
            cmd = [sys.executable, str(script)]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"README {kind} step failed:\n{text}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "demo" / "report.html").exists()
    assert (tmp_path / "out_report.html").exists() and any((tmp_path / "out_figures").glob("*.png"))
    assert (tmp_path / "python.zarr" / "zarr.json").exists()


def _check_dask(argv: list[str]) -> None:
    if argv[1] == "scheduler":
        from distributed.cli.dask_scheduler import main
    else:
        from distributed.cli.dask_worker import main
    main.make_context(f"dask {argv[1]}", list(argv[2:]))   # parses, runs nothing


def test_shell_blocks_parse():
    from bgdask.cli import build_parser

    parser = build_parser()
    checked = 0
    for kind, text in BLOCKS:
        if kind != "shell":
            continue
        for command in commands(text):
            for part in re.split(r"&&|;", command):
                argv = shlex.split(part, comments=True)
                if argv and argv[-1] == "&":
                    argv = argv[:-1]
                if not argv:
                    continue
                if argv[0] == "bgdask":
                    parser.parse_args(argv[1:])
                elif argv[0] == "dask":
                    _check_dask(argv)
                elif argv[0] == "docker":
                    assert (ROOT / argv[argv.index("-f") + 1]).exists(), part
                elif argv[0] == "podman-compose":
                    assert (ROOT / argv[argv.index("-f") + 1]).exists(), part
                elif argv[0] == "kubectl":
                    if "-k" in argv:
                        assert (ROOT / argv[argv.index("-k") + 1] / "kustomization.yaml").exists(), part
                elif argv[0].startswith(("deploy/", "docker/", "bash")):
                    script = argv[1] if argv[0] == "bash" else argv[0]
                    assert (ROOT / script).exists(), part
                else:
                    continue
                checked += 1
    assert checked >= 5
