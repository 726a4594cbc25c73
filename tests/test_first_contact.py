"""A newcomer's first hour: what tripped one, each pinned by a test.

Help that explains, errors that fit on one line and name the flag to use,
bad input found before a cluster starts, no silent single-visit run,
geometry errors that say what is wrong.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgdask.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def bgdask(*args, cwd=None, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "bgdask.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("bgdask: error:")]


# -- help ----------------------------------------------------------------------------------

def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_command_explains_itself(name):
    sub = _subparsers()[name]
    text = sub.format_help()
    assert sub.description and "example:" in text and f"bgdask {name}" in text.split("example:")[1]
    for action in sub._actions:
        if action.option_strings and action.dest != "help" or not action.option_strings:
            assert action.help, f"bgdask {name}: {action.option_strings or action.dest} has no help"


def test_defaults_are_shown():
    text = _subparsers()["simulate"].format_help()
    assert "(default: 4)" in text and "(default: 400)" in text


def test_a_typo_shows_the_commands_usage():
    out = bgdask("match", "x", "-o", "y.zarr", "--ref-vist", "3")
    assert out.returncode == 2
    assert "usage: bgdask match" in out.stderr and "--ref-vist" in out.stderr


# -- bad input before the cluster ------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing input", "existing output", "unknown reference", "plain file"])
def test_bad_input_fails_before_a_cluster_starts(case, small_tract, tmp_path):
    manifest, out = small_tract / "manifest.csv", tmp_path / "out.zarr"
    args = ["match", manifest, "-o", out]
    if case == "missing input":
        args[1] = tmp_path / "nosuchdir"
    elif case == "existing output":
        out.mkdir()
        (out / "zarr.json").write_text("{}")
    elif case == "unknown reference":
        args += ["--ref-visit", 4242]
    else:
        args[3] = tmp_path / "plain.txt"
        args[3].write_text("precious")
    t0 = time.monotonic()
    proc = bgdask(*args, "--workers", 1)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "dashboard" not in proc.stdout, "a cluster was started for input that could be checked first"
    print(f"{case}: failed in {elapsed:.2f} s")
    if case == "existing output":
        assert "--resume" in proc.stderr and "--overwrite" in proc.stderr
        assert "resume=True" not in proc.stderr            # the API's words, not the command's
    if case == "plain file":
        assert "--overwrite" not in proc.stderr             # --overwrite would refuse too
        assert (tmp_path / "plain.txt").read_text() == "precious"


def _without_overlap(sim):
    """Two visits; the second keeps data only where the first (the reference) has none."""
    import dataclasses

    import numpy as np

    ref, other = sim.visits[:2]
    warps = {}
    for (v, p), w in sim.warps.items():
        if v == other:
            w = dataclasses.replace(w, image=w.image.copy())
            w.image[np.isfinite(sim.warps[(ref, p)].image)] = np.nan
        if v in (ref, other):
            warps[(v, p)] = w
    return ref, other, warps


@pytest.mark.slow
def test_expected_worker_errors_arrive_as_one_line(small_sim, tmp_path):
    """A visit with no overlap fails in a worker: one line, no worker log, no traceback."""
    from bgdask.testing import write_warps

    ref, other, warps = _without_overlap(small_sim)
    manifest = write_warps(warps, tmp_path / "tract")
    proc = bgdask("match", manifest, "-o", tmp_path / "o.zarr", "--ref-visit", ref, "--skymap",
                  _skymap(small_sim, tmp_path), "--workers", 1, "--threads-per-worker", 1, "--no-progress")
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and f"visit {other}" in lines[0], proc.stderr
    assert "Compute Failed" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    verbose = bgdask("-v", "match", manifest, "-o", tmp_path / "o2.zarr", "--ref-visit", ref, "--skymap",
                     _skymap(small_sim, tmp_path), "--workers", 1, "--threads-per-worker", 1, "--no-progress")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def _skymap(sim, tmp_path):
    path = tmp_path / "skymap.yaml"
    sim.skymap.to_yaml(path)
    return path


# -- output and wording ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_says_things_once_and_logs_nothing_by_default(sync_store, small_tract, tmp_path):
    proc = bgdask("match", small_tract / "manifest.csv", "-o", tmp_path / "o.zarr", "--workers", 1,
                  "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("reference visit:") == 1, proc.stdout
    assert " INFO " not in proc.stderr and " - INFO - " not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_export_twice_names_the_flag(sync_store, tmp_path):
    _, store = sync_store
    assert bgdask("export", store, "--fits", tmp_path / "m").returncode == 0
    again = bgdask("export", store, "--fits", tmp_path / "m")
    assert again.returncode == 2
    assert "--overwrite" in again.stderr and "overwrite=True" not in again.stderr, again.stderr
    assert bgdask("export", store, "--fits", tmp_path / "m", "--overwrite").returncode == 0


@pytest.mark.slow
def test_report_and_plot_write_beside_the_store(sync_store, tmp_path):
    import shutil

    _, store = sync_store
    copy = tmp_path / "run.zarr"
    shutil.copytree(store, copy)
    assert bgdask("report", copy, cwd=tmp_path.parent).returncode == 0
    assert (tmp_path / "run_report.html").exists()
    assert bgdask("plot", copy).returncode == 0
    assert any((tmp_path / "run_figures").glob("*.png"))


def test_a_single_visit_says_nothing_was_matched(small_sim, tmp_path):
    import bgdask as bg

    one = {k: w for k, w in small_sim.warps.items() if k[0] == small_sim.visits[0]}
    with pytest.warns(bg.NothingMatchedWarning, match="only one visit"):
        bg.match_arrays(one, small_sim.skymap)


def test_all_others_skipped_says_nothing_was_matched(small_sim):
    import bgdask as bg

    ref, other, warps = _without_overlap(small_sim)
    with pytest.warns(bg.NothingMatchedWarning, match=f"no visit was matched.*{other} skipped"):
        bg.match_arrays(warps, small_sim.skymap, bg.MatchConfig(ref_visit=ref, on_no_overlap="skip"))


def test_geometry_inference_says_which_box_and_what_would_fit():
    from bgdask.errors import GeometryError
    from bgdask.geometry import Box, infer_skymap

    with pytest.raises(GeometryError) as info:
        infer_skymap({0: Box(15900, 15900, 4200, 4200)})
    message = info.value.cli_message()
    assert "patch 0's box" in message and "column 4, row 4" in message
    assert "patch_inner: [4000, 4000], patch_border: 100" in message and "--skymap" in message


# -- the install -------------------------------------------------------------------------------------

def _third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "bgdask").rglob("*.py"):
        if "butler" in path.parts:        # the optional extra has its own dependencies
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"bgdask"}


def test_every_imported_library_is_a_declared_dependency():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [d for name, group in meta["optional-dependencies"].items() if name != "butler" for d in group]
    declared = {re.split(r"[<>=;\[ ]", d)[0].strip().replace("-", "_").lower()
                for d in meta["dependencies"] + extras}
    module_of = {"yaml": "pyyaml", "sksparse": "scikit_sparse"}
    missing = sorted(m for m in _third_party_imports() if module_of.get(m, m).lower() not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_no_file_of_the_project_needs_the_teams_machines():
    assert not (ROOT / "tests" / "conftest.py").read_text().count("shared")
    assert (ROOT / "tests" / "data" / "afw" / "exposure-version-2.fits").exists()
    assert os.path.exists(ROOT / "tests" / "data" / "afw" / "README.md")
