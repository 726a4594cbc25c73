"""The documentation stands on its own and matches the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bgdask import MatchConfig

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "make_configuration.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, _, doc in MatchConfig.field_docs():
        assert f"| `{name}` |" in text and doc.split()[0] in text


def _project_text_files():
    skip = {"__pycache__", "build", "dist", "node_modules"}
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") and p not in (".ci",) or p in skip or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt", ""}:
            yield path


def test_no_file_refers_outside_the_project():
    """Docs, docstrings and tests cite the project's own docs, not notes beside it."""
    outside = re.compile(r"\.\./shared|ALGORITHM\.md|ARCHITECTURE\.md|design notes")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in _project_text_files()
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if outside.search(line) and p.name != "test_docs.py"]
    assert not hits, hits


def test_relative_links_in_the_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
