"""Figures and the HTML run report (bgdask.report), at 3 visits and at 200."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import bgdask
from bgdask.config import MatchConfig
from bgdask.report import FIGURE_SIZES, render_figures, write_figures, write_report

ON_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ["reference_choice", "seams", "quality", "thumbnails"]


def _png_size(data: bytes) -> tuple[int, int, np.ndarray]:
    from matplotlib import image as mpimg

    arr = mpimg.imread(io.BytesIO(data), format="png")
    return arr.shape[1], arr.shape[0], arr


def _kind(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _not_blank(data: bytes, what) -> None:
    _, _, arr = _png_size(data)
    rgb = arr[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, what
    assert len(np.unique((rgb[::7] * 255).astype(np.uint8), axis=0)) > 20, what


@pytest.fixture(scope="module")
def run(sync_store):
    """The small tract matched with the reference chosen by cost (no visit flagged)."""
    return sync_store


def detail_names(visits, ref) -> list[str]:
    out = []
    for v in visits:
        out.append(f"diff_model_{v}")
        if v != ref:
            out.append(f"mosaic_{v}")
    return out


@pytest.mark.slow
def test_summary_figures_are_pngs_of_their_size(run, tmp_path):
    result, store = run
    assert not result.table["flagged"].any()
    other = [v for v in result.table.index if v != result.reference_visit][0]
    paths = write_figures(store, tmp_path, visits=[other])
    assert [p.stem for p in paths] == SUMMARY + detail_names([other], result.reference_visit)
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path
        w, h, _ = _png_size(data)
        want_w, want_h = FIGURE_SIZES[_kind(path.stem)]
        assert w == want_w and (want_h is None or h == want_h), (path, w, h)
        _not_blank(data, path)


@pytest.mark.slow
def test_figures_are_deterministic(run):
    _, store = run
    first, again = list(render_figures(store)), list(render_figures(store))
    assert [f.name for f in first] == SUMMARY
    assert [f.png for f in first] == [f.png for f in again]


def test_unknown_visit_is_an_error_naming_it(run, cli):
    _, store = run
    rc, _, err = cli("plot", store, "--visit", "4242")
    assert rc == 2 and "4242" in err and "Traceback" not in err


def test_mosaic_shows_matching_worked(run):
    """The detail mosaics' numbers: binned ref - visit shrinks after matching,
    and in units of its noise it is near 1."""
    from bgdask.io.store import Store
    from bgdask.report.mosaic import InputWarps, MosaicGrid, rms, visit_mosaic

    result, store = run
    st = Store.open(store)
    grid = MosaicGrid.for_tract(st.skymap.height, st.skymap.width)
    for v in st.visits:
        if v == st.reference_visit:
            continue
        m = visit_mosaic(st, v, grid, InputWarps(st))
        before, after = rms(m.diff_before()), rms(m.diff_after())
        assert np.isfinite(before) and np.isfinite(after)
        assert after < 0.25 * before, (v, before, after)
        assert 0.8 < rms(m.diff_after_sigma()) < 1.5, v


def _assert_no_blank_strip(store) -> None:
    """The model drawn covers the tract to its edge (step 6.1 extrapolates),
    though the superpixel grid stops at the last whole bin."""
    from bgdask.report.figures import ReportData, model_raster
    from bgdask.report.mosaic import MosaicGrid

    data = ReportData.open(store)
    h, w = data.tract_shape
    ny, nx = data.models[data.visits[0]].model.shape
    assert nx * data.config.x_bin < w and ny * data.config.y_bin < h   # this tract has the strips
    grid = MosaicGrid.for_tract(h, w)
    xe, ye = grid.edges()
    assert (xe[0], xe[-1], ye[0], ye[-1]) == (-0.5, w - 0.5, -0.5, h - 0.5)
    for v in data.visits:
        raster = model_raster(data, v, grid)
        assert raster.shape == grid.shape and np.isfinite(raster).all(), v


def _check_page(page: str, result, details=()) -> list[str]:
    ref = result.reference_visit
    m = re.search(r'<div id="reference-visit"[^>]*>(.*?)</div>', page, re.S)
    assert m and f"<strong>{ref}</strong>" in m.group(1)
    assert re.search(r'<div id="flagged"', page)
    imgs = re.findall(r"<img ([^>]*)>", page)
    names = [n.group(1) for n in (re.search(r'data-name="([^"]+)"', i) for i in imgs) if n]
    assert names[:3] == ["seams", "thumbnails_colorbar", "quality"]
    for attrs in imgs:
        alt = re.search(r'alt="([^"]*)"', attrs).group(1)
        assert len(alt) > 20, attrs[:80]
        src = re.search(r'src="data:image/png;base64,([^"]+)"', attrs).group(1)
        w, h, _ = _png_size(base64.b64decode(src))
        assert f'width="{w}"' in attrs and f'height="{h}"' in attrs
    thumbs = re.findall(r'<figure class="thumb[^"]*" id="thumb-(\d+)"', page)
    assert [int(v) for v in thumbs] == sorted(result.table.index)
    for v in details:
        assert f'id="visit-{v}"' in page and f"diff_model_{v}" in names
    # self-contained: nothing external to load
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page
    for field, _, _ in MatchConfig.field_docs():
        assert f"<td class=\"l\">{field}</td>" in page
    assert "stage B" in page and "complete" in page
    rows = re.findall(r'<tr class="[^"]*"><td class="l" data-value="(\d+)">', page)
    assert [int(v) for v in rows] == sorted(result.table.index)
    return names


@pytest.mark.slow
def test_cli_plot_and_report(run, tmp_path, cli):
    result, store = run
    other = max(v for v in result.table.index if v != result.reference_visit)
    outdir = tmp_path / "figs"
    rc, out, _ = cli("plot", store, "-o", outdir, "--visit", other)
    assert rc == 0
    assert sorted(p.stem for p in outdir.glob("*.png")) == sorted(SUMMARY + detail_names([other], result.reference_visit))
    html_path = tmp_path / "r" / "report.html"
    rc, out, _ = cli("report", store, "-o", html_path, "--visit", other)
    assert rc == 0 and str(html_path) in out
    page = html_path.read_text()
    names = _check_page(page, result, details=[other])
    assert "reference_choice" in names
    assert 'id="flagged" class="none"' in page


@pytest.mark.slow
def test_report_with_given_reference_incomplete_and_perf_link(small_sim, small_tract, tmp_path):
    """Reference given (no reference-choice figure), one warp not done, input gone, a perf report link."""
    sim, d = small_sim, small_tract
    store = tmp_path / "given.zarr"
    ref = sim.visits[-1]
    # 96-pixel superpixels: 5 of them cover 480 of the tract's 512 pixels
    result = bgdask.match_backgrounds(d / "manifest.csv", store, MatchConfig(ref_visit=ref, x_bin=96, y_bin=96),
                                      scheduler="sync")
    assert result.reference_visit == ref
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

    path = write_report(store, tmp_path / "sub" / "report.html", visits=[sim.visits[0]])
    page = path.read_text()
    names = _check_page(page, result, details=[sim.visits[0]])
    assert "reference_choice" not in names and 'id="reference-choice"' not in page
    assert "given in the configuration" in page
    assert "INCOMPLETE" in page and "1 warp(s) not written" in page
    link = re.search(r'<p id="performance-report">.*?<a href="([^"]+)"', page).group(1)
    assert (path.parent / link).resolve() == perf.resolve()
    assert [f.name for f in render_figures(store)] == SUMMARY[1:]
    _assert_no_blank_strip(store)


# -- 200 visits ------------------------------------------------------------------------

#: 32-pixel superpixels have 4 times the noise of 128-pixel ones, so the
#: method's systematic residuals weigh less: the ordinary visits of this
#: tract have match_ratio 0.4 to 2.4 (measured); a 20 nJy step gives 4.8.
V200_CONFIG = dict(x_bin=32, y_bin=32, binning=16, max_match_ratio=3.0)
V200_STEP = 7       # the index of the visit given a step


@pytest.fixture(scope="module")
def v200(tmp_path_factory):
    """200 visits on 2 x 2 patches of 128 pixels, one with a 20 nJy step, matched."""
    from bgdask.simulate import make_tract
    from bgdask.testing import with_step, write_warps

    sim = make_tract(n_visits=200, num_patches=(2, 2), patch_inner=128, patch_border=8, seed=5)
    stepped = sim.visits[V200_STEP]
    d = tmp_path_factory.mktemp("v200")
    manifest = write_warps(with_step(sim, sim.warps, stepped, 20.0), d)
    sim.skymap.to_yaml(d / "skymap.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bgdask.UnusableWarpWarning)   # a few warps lie in chip gaps only
        result = bgdask.match_backgrounds(manifest, d / "out.zarr", MatchConfig(**V200_CONFIG),
                                          skymap=d / "skymap.yaml", scheduler="sync")
    return sim, stepped, result, d / "out.zarr"


@pytest.fixture(scope="module")
def v200_report(v200, tmp_path_factory):
    """The report of the 200-visit store, written once for the tests that
    read it: (the page, the seconds writing it took)."""
    store = v200[3]
    t0 = time.perf_counter()
    page = write_report(store, tmp_path_factory.mktemp("v200_report") / "report.html")
    return page, time.perf_counter() - t0


@pytest.mark.slow(50)      # with the 200-visit tract and its report (fixtures)
def test_report_of_200_visits_is_small_and_quick(v200, v200_report):
    sim, stepped, result, store = v200
    assert result.table["flagged"].sum() == 1 and result.table.loc[stepped, "flagged"]
    page, seconds = v200_report
    size = page.stat().st_size
    print(f"\nreport of 200 visits: {size / 1e6:.2f} MB in {seconds:.1f} s")
    assert size <= 5e6 and seconds <= 60
    text = page.read_text()
    names = _check_page(text, result, details=[stepped])
    assert f'data-visits="{stepped}"' in text and f'<a href="#visit-{stepped}">{stepped}</a>' in text
    assert names.count(f"mosaic_{stepped}") == 1 and sum(n.startswith("mosaic_") for n in names) == 1


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
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


#: The test's own probe, added to a copy of the page (the shipped page has no
#: such script): once everything has loaded it records on <html> how many
#: images loaded or are broken, per section, which elements lie wholly on the
#: first screen, and the visit atop the per-visit table after sorting it by
#: match_ratio with one click (ascending) and two (descending).
PROBE = """
<script>
window.addEventListener("load", function () {
  var root = document.documentElement;
  function count(sel) {
    var imgs = Array.prototype.slice.call(document.querySelectorAll(sel));
    var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
    var broken = imgs.filter(function (im) { return im.complete && im.naturalWidth === 0; }).length;
    return imgs.length + "/" + ok + "/" + broken;
  }
  root.setAttribute("data-images", count("img"));
  root.setAttribute("data-thumbs", count("#thumbnail-grid img"));
  root.setAttribute("data-seams", count("#seams img"));
  var first = [];
  ["reference-visit", "flagged", "counts", "visit-table"].forEach(function (id) {
    var el = document.getElementById(id);
    if (!el) { return; }
    var r = el.getBoundingClientRect();
    if (r.top >= 0 && r.top < window.innerHeight && (id === "visit-table" || r.bottom <= window.innerHeight)) {
      first.push(id);
    }
  });
  root.setAttribute("data-first-screen", first.join(" "));
  var table = document.getElementById("visit-table");
  var th = Array.prototype.filter.call(table.tHead.rows[0].cells,
                                       function (h) { return h.textContent === "match_ratio"; })[0];
  th.click();
  root.setAttribute("data-sorted-up", table.tBodies[0].rows[0].cells[0].getAttribute("data-value"));
  th.click();
  root.setAttribute("data-sorted-down", table.tBodies[0].rows[0].cells[0].getAttribute("data-value"));
});
</script>
"""


def _probe(exe, tmp_path, page: Path, window=(1280, 800)) -> dict[str, str]:
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = _browser(exe, tmp_path / "profile-dom", probed.as_uri(), "--run-all-compositor-stages-before-draw",
                    "--virtual-time-budget=10000", f"--window-size={window[0]},{window[1]}", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = re.search(r"<html[^>]*>", proc.stdout).group(0)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', root))


@pytest.mark.slow
def test_report_of_200_visits_in_headless_chromium(v200, v200_report, tmp_path):
    exe = _chromium()
    sim, stepped, result, store = v200
    page, _ = v200_report
    got = _probe(exe, tmp_path, page)
    total, ok, broken = map(int, got["images"].split("/"))
    assert total == ok and broken == 0 and total >= 200 + 3, got
    assert got["thumbs"] == "200/200/0" and got["seams"] == "1/1/0", got
    first = got["first-screen"].split()
    assert {"reference-visit", "flagged", "counts", "visit-table"} <= set(first), got
    ratios = result.table["match_ratio"].dropna()
    assert int(got["sorted-up"]) == int(ratios.idxmin()) and int(got["sorted-down"]) == int(ratios.idxmax()) == stepped

    # the first screen, as a person sees it: the reference and the flagged visit in the text
    shot = tmp_path / "shot.png"
    proc = _browser(exe, tmp_path / "profile-shot", page.as_uri(), f"--screenshot={shot}",
                    "--window-size=1280,800", "--hide-scrollbars")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    w, h, arr = _png_size(shot.read_bytes())
    assert (w, h) == (1280, 800)
    rgb = arr[..., :3]
    assert (rgb.min(axis=2) < 0.5).mean() > 0.01          # text on the page
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0.3   # colour: the flag box


@pytest.mark.slow
def test_report_in_headless_chromium(run, tmp_path):
    exe = _chromium()
    result, store = run
    page = write_report(store, tmp_path / "report.html")
    got = _probe(exe, tmp_path, page, window=(1280, 1000))
    total, ok, broken = map(int, got["images"].split("/"))
    assert total == ok and broken == 0, got
    assert got["thumbs"] == f"{len(result.table)}/{len(result.table)}/0"
    assert {"reference-visit", "flagged"} <= set(got["first-screen"].split()), got


def test_browser_probe_detects_broken_images(tmp_path):
    """The probe does fail: a thumbnail that is not a PNG is counted broken."""
    exe = _chromium()
    good = base64.b64encode(_tiny_png()).decode()
    page = tmp_path / "broken.html"
    page.write_text(f"<!DOCTYPE html><html><head></head><body>"
                    f'<div id="reference-visit">1</div><div id="flagged"></div>'
                    f'<div id="thumbnail-grid"><img src="data:image/png;base64,{good}" alt="ok">'
                    f'<img src="data:image/png;base64,AAAA" alt="broken"></div>'
                    f'<table id="visit-table"><thead><tr><th>visit</th><th>match_ratio</th></tr></thead>'
                    f'<tbody><tr><td data-value="1">1</td><td>2</td></tr></tbody></table></body></html>')
    got = _probe(exe, tmp_path, page)
    assert got["thumbs"] == "2/1/1" and got["images"] == "2/1/1", got


def _tiny_png() -> bytes:
    from matplotlib import image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, np.ones((4, 4, 3)), format="png")
    return buf.getvalue()
