"""The extra bgdask[butler]: present (else one skip reason, or a failure in CI),
and one clear message without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from butler_env import MISSING, SKIP_REASON

#: Make the Rubin packages unimportable in a child interpreter, whatever is installed.
BLOCK = textwrap.dedent("""
    import sys
    for name in ("lsst.daf.butler", "lsst.images", "lsst.resources", "lsst.pipe.base"):
        sys.modules[name] = None
""")


def test_butler_packages_installed():
    if MISSING:
        if os.environ.get("CI"):
            pytest.fail(SKIP_REASON)
        pytest.skip(SKIP_REASON)


def test_import_without_the_extra_says_what_to_install():
    out = subprocess.run([sys.executable, "-c", BLOCK + "import bgdask.butler"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: bgdask.butler needs the Rubin Butler packages")
    assert "pip install 'bgdask[butler]'" in last and "Python >= 3.12" in last
    # the core does not need them
    out = subprocess.run([sys.executable, "-c", BLOCK + "import bgdask, bgdask.cli; print(bgdask.MatchConfig().x_bin)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "128"


def test_cli_without_the_extra_is_one_error_line(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "butler.yaml").write_text("datastore: {}\n")
    code = BLOCK + textwrap.dedent(f"""
        from bgdask.cli import main
        sys.exit(main(["match", {str(repo)!r}, "-o", {str(tmp_path / "o.zarr")!r},
                       "--collections", "warps", "--no-progress"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgdask: error: ")
    assert "bgdask[butler]" in lines[0]
    assert not (tmp_path / "o.zarr").exists()
