"""Figures, the HTML run report and the configuration reference (bgdask.report)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import bgdask
from bgdask import cli
from bgdask.config import MatchConfig
from bgdask.report import FIGURE_SIZES, render_figures, write_figures, write_report


ON_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parents[1]


def _png_size(data: bytes) -> tuple[int, int, np.ndarray]:
    from matplotlib import image as mpimg

    arr = mpimg.imread(io.BytesIO(data), format="png")
    return arr.shape[1], arr.shape[0], arr


def _kind(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


@pytest.fixture(scope="module")
def tract(small_sim, small_tract):
    return small_sim, small_tract


@pytest.fixture(scope="module")
def run(sync_store):
    """The tract matched with the reference chosen by cost."""
    return sync_store


@pytest.fixture(scope="module")
def figures(run, tmp_path_factory):
    _, store = run
    outdir = tmp_path_factory.mktemp("figures")
    return write_figures(store, outdir)


def expected_names(result) -> list[str]:
    visits = sorted(result.table.index)
    names = ["reference_choice"]
    for v in visits:
        names.append(f"diff_model_{v}")
        if v != result.reference_visit:
            names.append(f"mosaic_{v}")
    return names + ["residuals"]


def test_every_figure_is_a_png_of_its_size(run, figures):
    result, _ = run
    assert [p.stem for p in figures] == expected_names(result)
    for path in figures:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path
        w, h, arr = _png_size(data)
        assert (w, h) == FIGURE_SIZES[_kind(path.stem)], path
        # not blank: many distinct colours, not one flat field
        rgb = arr[..., :3].reshape(-1, 3)
        assert rgb.std() > 0.05, path
        assert len(np.unique((rgb[::7] * 255).astype(np.uint8), axis=0)) > 20, path


def test_figures_are_deterministic(run, figures):
    _, store = run
    again = render_figures(store)
    for path, fig in zip(figures[:2], again):
        assert fig.filename == path.name
        assert fig.png == path.read_bytes()


def test_mosaic_shows_matching_worked(run):
    """The residual figure's numbers: binned ref - visit shrinks to noise after matching."""
    from bgdask.report import _Grid, _Inputs, _Store, _visit_mosaic, _rms

    result, store = run
    st = _Store.open(store)
    grid = _Grid.for_tract(*st.tract_shape)
    for v in st.visits:
        if v == st.reference:
            continue
        m = _visit_mosaic(st, v, grid, _Inputs(st))
        before, after = _rms(m.diff_before()), _rms(m.diff_after())
        assert np.isfinite(before) and np.isfinite(after)
        assert after < 0.25 * before, (v, before, after)


def test_cli_plot_and_report(run, tmp_path, capsys):
    result, store = run
    outdir = tmp_path / "figs"
    assert cli.main(["plot", str(store), "-o", str(outdir)]) == 0
    assert sorted(p.stem for p in outdir.glob("*.png")) == sorted(expected_names(result))
    html_path = tmp_path / "r" / "report.html"
    assert cli.main(["report", str(store), "-o", str(html_path)]) == 0
    assert str(html_path) in capsys.readouterr().out
    page = html_path.read_text()
    _check_page(page, result)


def _check_page(page: str, result) -> list[str]:
    ref = result.reference_visit
    m = re.search(r'<div id="reference-visit"[^>]*>(.*?)</div>', page, re.S)
    assert m and f"<strong>{ref}</strong>" in m.group(1)
    imgs = re.findall(r"<img ([^>]*)>", page)
    names = [re.search(r'data-name="([^"]+)"', i).group(1) for i in imgs]
    assert names == expected_names(result)
    for attrs, name in zip(imgs, names):
        alt = re.search(r'alt="([^"]*)"', attrs).group(1)
        assert len(alt) > 20, name
        src = re.search(r'src="data:image/png;base64,([^"]+)"', attrs).group(1)
        w, h, _ = _png_size(base64.b64decode(src))
        assert (w, h) == FIGURE_SIZES[_kind(name)]
    # self-contained: nothing external to load
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page
    for field, _, _ in MatchConfig.field_docs():
        assert f"<td class=\"l\">{field}</td>" in page
    assert "stage B" in page and "complete" in page
    for v in result.table.index:
        assert f"<td class=\"\">{v}</td>" in page
    return names


def test_report_with_given_reference_incomplete_and_perf_link(tract, tmp_path):
    """Reference given (no cost figures), one warp not done, input gone, a perf report link."""
    sim, d = tract
    store = tmp_path / "given.zarr"
    ref = sim.visits[-1]
    result = bgdask.match_backgrounds(d / "manifest.csv", store, MatchConfig(ref_visit=ref), scheduler="sync")
    assert result.reference_visit == ref
    # the lead records the performance report's path; a missing input and an unfinished warp
    perf = tmp_path / "dask-report.html"
    perf.write_text("<html></html>")
    g = zarr.open_group(str(store), mode="r+")
    vi = list(g["visit"][:]).index(sim.visits[0])
    pi = int(np.flatnonzero(g["present"][vi])[0])
    g["done"][vi, pi] = False
    g.attrs.update(performance_report=str(perf), complete=False, source=str(tmp_path / "gone"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
        zarr.consolidate_metadata(str(store))

    path = write_report(store, tmp_path / "sub" / "report.html")
    page = path.read_text()
    _check_page(page, result)
    assert "given in the configuration" in page
    assert re.search(r'alt="Reference choice: reference visit \d+ was given in the configuration', page)
    assert "INCOMPLETE" in page and "1 warp(s) not written" in page
    link = re.search(r'<p id="performance-report">.*?<a href="([^"]+)"', page).group(1)
    assert (path.parent / link).resolve() == perf.resolve()
    figs = list(render_figures(store))
    assert [f.name for f in figs] == expected_names(result)


# -- in a real browser -----------------------------------------------------------------

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if ON_CI:
        pytest.fail("Chromium is not installed (apt-get install -y chromium); CI must run the browser test")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


def _browser(exe: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={profile}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)


def _dom(exe, tmp_path, page: Path) -> str:
    proc = _browser(exe, tmp_path / "profile-dom", page.as_uri(), "--run-all-compositor-stages-before-draw",
                    "--virtual-time-budget=5000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_report_in_headless_chromium(run, tmp_path):
    exe = _chromium()
    result, store = run
    page = write_report(store, tmp_path / "report.html")
    n_figs = len(expected_names(result))

    shot = tmp_path / "shot.png"
    proc = _browser(exe, tmp_path / "profile-shot", page.as_uri(), f"--screenshot={shot}",
                    "--window-size=1200,3000", "--hide-scrollbars")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    w, h, arr = _png_size(shot.read_bytes())
    assert (w, h) == (1200, 3000)
    rgb = arr[..., :3]
    assert rgb.std() > 0.05                              # not blank
    assert (rgb.min(axis=2) < 0.5).mean() > 0.01         # dark text and plots on the page
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0.3  # colour: the figures are drawn

    dom = _dom(exe, tmp_path, page)
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-images-ok="true"' in root, root
    assert f'data-images-total="{n_figs}"' in root and 'data-images-broken="0"' in root, root
    m = re.search(r'<div id="reference-visit"[^>]*>(.*?)</div>', dom, re.S)
    assert m and str(result.reference_visit) in m.group(1)


def test_browser_check_detects_broken_images(tmp_path):
    """The page's image check does fail: one valid PNG, one broken image."""
    exe = _chromium()
    from bgdask.report import _SCRIPT

    good = base64.b64encode(_tiny_png()).decode()
    page = tmp_path / "broken.html"
    page.write_text(f"<!DOCTYPE html><html><head><script>{_SCRIPT}</script></head><body>"
                    f'<img src="data:image/png;base64,{good}" alt="ok">'
                    f'<img src="data:image/png;base64,AAAA" alt="broken"></body></html>')
    root = re.search(r"<html[^>]*>", _dom(exe, tmp_path, page)).group(0)
    assert 'data-images-ok="false"' in root and 'data-images-broken="1"' in root, root


def _tiny_png() -> bytes:
    from matplotlib import image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, np.ones((4, 4, 3)), format="png")
    return buf.getvalue()
