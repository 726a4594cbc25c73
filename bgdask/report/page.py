"""The HTML run report of a store (``bgdask report``): one self-contained page.

Summary first, on one screen: the reference visit (``id="reference-visit"``),
the flagged visits (``id="flagged"``, linking to their details) and the
counts (``id="counts"``); then the sortable per-visit table
(``id="visit-table"``), the seam maps, the thumbnail grid of every visit's
difference model on one colour scale (``id="thumbnail-grid"``), the quality
per visit and, when the reference was chosen, the reference choice. Then the
details (difference model and mosaics) of the flagged visits and of the
visits asked for (``visits=``, ``bgdask report --visit V``); then the run:
completeness, configuration, geometry, times.

Everything is inline: images as PNG data URIs, the stylesheet
(``report.css``) and the table-sorting script (``report.js``), package
resources of :mod:`bgdask.report`. Nothing external is loaded.
"""

from __future__ import annotations

import base64
import html
import math
import os
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from .figures import (Figure, ReportData, Thumbnail, detail_figures, detail_visits, fig_colorbar, summary_figures,
                      thumbnails, _thumbnail_caption)

__all__ = ["write_report"]

#: The completeness matrix (visit x patch) is shown up to this many cells.
MAX_MATRIX_CELLS = 4000
#: Per-visit table columns: (column, header, how it is shown).
TABLE = (
    ("status", "status", "text"),
    ("flagged", "flag", "flag"),
    ("match_ratio", "match_ratio", "num"),
    ("match_rms", "match_rms [nJy]", "num"),
    ("match_noise", "match_noise [nJy]", "num"),
    ("extrap_frac", "extrap_frac", "pct"),
    ("n_good", "n_good", "int"),
    ("model_mean", "model_mean [nJy]", "num"),
    ("model_rms", "model_rms [nJy]", "num"),
    ("fit_rms", "fit_rms [nJy]", "num"),
    ("ref_cost", "ref_cost", "num"),
)


def _resource(name: str) -> str:
    return resources.files("bgdask.report").joinpath(name).read_text(encoding="utf-8")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return "NaN" if math.isnan(v) else f"{v:.4g}"
    if v is None:
        return "None"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def _table(headers, rows, row_classes=None, left=()) -> str:
    out = ["<table>"]
    if headers:
        out.append("<tr>" + "".join(f'<th class="{"l" if i in left else ""}">{_e(h)}</th>'
                                    for i, h in enumerate(headers)) + "</tr>")
    for k, row in enumerate(rows):
        cls = (row_classes or {}).get(k)
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        out.append("".join(f'<td class="{"l" if i in left else ""}">{_e(c)}</td>' for i, c in enumerate(row)))
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(png: bytes, alt: str, width: int, height: int, **attrs) -> str:
    data = base64.b64encode(png).decode("ascii")
    extra = "".join(f' {k.replace("_", "-")}="{_e(v)}"' for k, v in attrs.items())
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}" width="{width}" height="{height}"{extra}>'


def _figure(fig: Figure, heading: bool = True) -> str:
    title = f"<h3>{_e(fig.title)}</h3>\n" if heading else ""
    caption = f"\n<figcaption>{_e(fig.caption)}</figcaption>" if fig.caption else ""
    return (f'<figure id="fig-{_e(fig.name)}">\n{title}'
            f'{_img(fig.png, fig.alt, fig.width, fig.height, data_name=fig.name)}{caption}\n</figure>')


# -- the summary ------------------------------------------------------------------------

def _summary(data: ReportData, details: Sequence[int]) -> str:
    st, t = data.store, data.table
    ref = data.reference
    if ref is None:
        reference = '<div id="reference-visit" data-visit="">Reference visit: not chosen yet</div>'
    else:
        how = "given in the configuration" if data.ref_given else "chosen by least cost"
        reference = (f'<div id="reference-visit" data-visit="{_e(ref)}">Reference visit: <strong>{_e(ref)}</strong>'
                     f' <span class="muted">({_e(how)})</span></div>')
    measured = bool(np.isfinite(np.asarray(t["match_ratio"], dtype=float)).any())
    threshold = data.config.max_match_ratio if data.config else float("nan")
    if not data.ready or not measured:
        flagged = ('<div id="flagged" data-visits="">Flags: not measured yet '
                   '<span class="muted">(stage C has not finished)</span></div>')
    elif not data.flagged:
        flagged = (f'<div id="flagged" class="none" data-visits="">No visit flagged: every match_ratio '
                   f'&le; {threshold:g}</div>')
    else:
        links = " ".join(f'<a href="#visit-{v}">{v}</a>' for v in data.flagged)
        flagged = (f'<div id="flagged" data-visits="{" ".join(map(str, data.flagged))}">'
                   f'<strong>{len(data.flagged)} flagged</strong> (match_ratio &gt; {threshold:g}): {links}</div>')
    status = {s: int((t["status"] == s).sum()) for s in ("matched", "reference", "skipped", "empty")}
    present, done = st.present, st.done() & st.present
    n_p, n_d = int(present.sum()), int(done.sum())
    complete = st.complete and n_p == n_d
    counts = (f'<div id="counts">{len(data.visits)} visits: ' + ", ".join(f"{n} {s}" for s, n in status.items())
              + f"<br>{n_p} warps, {n_d} written, {int((st.usable & done).sum())} with usable pixels: "
              + ('<span class="ok">complete</span>' if complete else '<span class="bad">INCOMPLETE</span>')
              + (f"<br>details below: {', '.join(map(str, details))}" if details else "") + "</div>")
    return f'<section id="summary">\n{reference}\n{flagged}\n{counts}\n</section>'


def _visit_table(data: ReportData, details: Sequence[int]) -> str:
    st, t = data.store, data.table
    cols = [c for c in TABLE if c[0] != "ref_cost" or data.ref_chosen]
    head = ('<tr><th class="l">visit</th>' + "".join(f'<th class="{"l" if kind == "text" else ""}">{_e(h)}</th>'
                                                     for _, h, kind in cols)
            + "<th>warps</th><th>done</th><th>usable</th></tr>")
    body = []
    done = st.done()
    for vi, v in enumerate(data.visits):
        classes = ["ref"] if v == data.reference else []
        if v in data.flagged:
            classes.append("flagged")
        link = f'<a href="#visit-{v}">{v}</a>' if v in details else str(v)
        cells = [f'<td class="l" data-value="{v}">{link}</td>']
        for name, _, kind in cols:
            x = t.loc[v, name]
            if kind == "text":
                cells.append(f'<td class="l">{_e(x)}</td>')
            elif kind == "flag":
                cells.append(f'<td class="flag" data-value="{int(bool(x))}">{"FLAGGED" if x else ""}</td>')
            else:
                x = float(x)
                shown = ("" if math.isnan(x) else f"{100 * x:.1f}%" if kind == "pct"
                         else str(int(x)) if kind == "int" else f"{x:.4g}")
                cells.append(f'<td data-value="{"" if math.isnan(x) else repr(x)}">{shown}</td>')
        n = [int(st.present[vi].sum()), int((done[vi] & st.present[vi]).sum()),
             int((st.usable[vi] & done[vi] & st.present[vi]).sum())]
        cells += [f"<td>{k}</td>" for k in n]
        body.append(f'<tr class="{" ".join(classes)}">' + "".join(cells) + "</tr>")
    note = ("<p class=\"muted\">Click a header to sort. match_ratio: RMS over the superpixels shared with the "
            "reference of the statistic of reference - matched visit, over the RMS the variance planes alone "
            "predict (near 1: matched to the noise); flagged above max_match_ratio. extrap_frac: share of the "
            "visit's usable pixels whose offset was not measured against the reference. fit_rms: the model's "
            "cross-validated residual. n_good, model_mean, model_rms: the difference model (step 5). "
            "warps / done / usable: warps present, written completely, with usable pixels.</p>")
    return ('<section id="visits">\n<h2>Visits</h2>\n' + note + '\n<div class="scroll"><table id="visit-table">'
            f"<thead>{head}</thead><tbody>\n" + "\n".join(body) + "\n</tbody></table></div>\n</section>")


def _thumbnail_grid(data: ReportData, thumbs: list[Thumbnail], colorbar: Figure, details: Sequence[int]) -> str:
    cells = []
    for th in thumbs:
        classes = ["thumb"] + (["flagged"] if th.flagged else []) + (["ref"] if th.visit == data.reference else [])
        ratio = "" if math.isnan(th.match_ratio) else f" · {th.match_ratio:.3g}"
        label = f"{th.visit}{' ref' if th.visit == data.reference else ''}{ratio}"
        if th.visit in details:
            label = f'<a href="#visit-{th.visit}">{_e(label)}</a>'
        else:
            label = _e(label)
        alt = (f"Difference model of visit {th.visit} ({th.status}"
               + (", flagged" if th.flagged else "") + ")")
        title = f"visit {th.visit}: {th.status}; match_ratio {ratio.strip(' ·') or 'n/a'}"
        cells.append(f'<figure class="{" ".join(classes)}" id="thumb-{th.visit}" title="{_e(title)}">'
                     f"{_img(th.png, alt, th.width, th.height)}<figcaption>{label}</figcaption></figure>")
    return ('<section id="thumbnails">\n<h2>Difference models of every visit</h2>\n'
            f'<p class="muted">{_e(_thumbnail_caption(data))} Outlined in vermillion: flagged; in black: the '
            "reference. The number after each visit is its match_ratio.</p>\n"
            + _figure(colorbar, heading=False) + '\n<div id="thumbnail-grid">\n' + "\n".join(cells)
            + "\n</div>\n</section>")


def _details(data: ReportData, details: Sequence[int]) -> str:
    out = ['<section id="details">\n<h2>Visits in detail</h2>']
    if not details:
        out.append("<p class=\"muted\">No visit is flagged. Any visit's difference model and mosaics: "
                   "<code>bgdask report STORE --visit V</code>.</p>")
    else:
        out.append("<p class=\"muted\">The flagged visits and those asked for; any other: "
                   "<code>bgdask report STORE --visit V</code>.</p>")
    figs: dict[int, list[Figure]] = {}
    for fig in detail_figures(data, details):
        figs.setdefault(int(fig.name.rsplit("_", 1)[1]), []).append(fig)
    for v in details:
        why = "flagged" if v in data.flagged else "asked for"
        ratio = float(data.value("match_ratio", v))
        out.append(f'<details class="visit" id="visit-{v}" open><summary>Visit {v} ({_e(data.status(v))}, '
                   f"{why}; match_ratio {'n/a' if math.isnan(ratio) else f'{ratio:.3g}'})</summary>")
        out += [_figure(f) for f in figs.get(v, [])]
        out.append("</details>")
    out.append("</section>")
    return "\n".join(out)


# -- the run ------------------------------------------------------------------------------

def _completeness(data: ReportData) -> str:
    st = data.store
    present, done = st.present, st.done() & st.present
    n_p, n_d = int(present.sum()), int(done.sum())
    complete = st.complete and n_p == n_d
    state = ('<span class="ok">complete</span>' if complete else
             f'<span class="bad">INCOMPLETE</span>: {n_p - n_d} warp(s) not written; finish the run with '
             "<code>bgdask match INPUT -o STORE --resume</code>")
    out = [f"<h2>Completeness</h2>\n<p id=\"completeness\">{state}: {n_d} of {n_p} warps written; "
           f"{int((st.usable & done).sum())} with usable pixels.</p>"]
    if len(st.visits) * len(st.patches) <= MAX_MATRIX_CELLS:
        head = "<tr><th>visit \\ patch</th>" + "".join(f"<th>{p}</th>" for p in st.patches) + "</tr>"
        body = []
        for vi, v in enumerate(st.visits):
            cells = []
            for pi in range(len(st.patches)):
                if not present[vi, pi]:
                    cells.append("<td></td>")
                elif not done[vi, pi]:
                    cells.append('<td class="bad" title="present, not written">&#9675;</td>')
                elif not st.usable[vi, pi]:
                    cells.append('<td title="written, no usable pixel">&#9680;</td>')
                else:
                    cells.append('<td class="ok" title="written">&#9679;</td>')
            body.append(f"<tr><th>{v}</th>{''.join(cells)}</tr>")
        out.append('<table class="matrix">' + head + "".join(body) + "</table>")
        out.append("<p class=\"muted\">&#9679; written; &#9680; written, no usable pixel; "
                   "&#9675; present, not written yet; empty: the visit has no warp on that patch.</p>")
    return "\n".join(out)


def _configuration(data: ReportData) -> str:
    from ..config import MatchConfig

    cfg = data.config or MatchConfig()
    value = cfg.to_dict()
    rows, classes = [], {}
    for k, (name, default, doc) in enumerate(MatchConfig.field_docs()):
        if isinstance(default, tuple):
            default = list(default)
        if value[name] != default:
            classes[k] = "changed"
        rows.append([name, _fmt(value[name]), _fmt(default), doc])
    return ("<h2>Configuration</h2>\n<p class=\"muted\">The store's configuration; rows whose value differs "
            "from the default are highlighted.</p>\n"
            + _table(["field", "value", "default", "meaning"], rows, classes, left=(0, 1, 2, 3)))


def _geometry(data: ReportData) -> str:
    sm, cfg = data.skymap, data.config
    rows = [["tract", _fmt(sm.tract)], ["patch_inner", _fmt(sm.patch_inner)],
            ["patch_border", _fmt(sm.patch_border)], ["num_patches", _fmt(sm.num_patches)],
            ["tract size (W x H)", f"{sm.width} x {sm.height} pixels"]]
    if cfg is not None:
        rows.append(["superpixel grid", f"{sm.height // cfg.y_bin} x {sm.width // cfg.x_bin} superpixels of "
                                        f"{cfg.x_bin} x {cfg.y_bin} pixels"])
    rows += [["patches with warps", str(len(data.store.patches))], ["visits", str(len(data.visits))]]
    return "<h2>Geometry</h2>\n" + _table(None, rows, left=(0, 1))


def _times(data: ReportData, report_path: Path) -> str:
    st = data.store
    out = ["<h2>Run time</h2>"]
    times = st.stage_times
    if times:
        out.append(_table(["stage", "wall time"], [[k, f"{float(v):.2f} s"] for k, v in times.items()], left=(0,)))
    else:
        out.append("<p class=\"muted\">No stage times recorded in the store.</p>")
    perf = st.attrs.get("performance_report")
    if perf:
        target = Path(str(perf))
        if not target.is_absolute():
            target = Path(st.path).parent / target
        try:
            href = os.path.relpath(target.resolve(), report_path.resolve().parent)
        except ValueError:  # another drive (Windows)
            href = target.resolve().as_uri()
        exists = "" if target.exists() else " (file not found)"
        out.append(f'<p id="performance-report">Dask performance report: '
                   f'<a href="{_e(href)}">{_e(target)}</a>{_e(exists)}</p>')
    return "\n".join(out)


# -- the page ---------------------------------------------------------------------------------

def write_report(store, path, *, visits: Sequence[int] | None = None) -> Path:
    """Write one self-contained HTML page about ``store`` to ``path``; returns the path.

    Summary first (the reference, the flagged visits, counts, the sortable
    per-visit table, the seam maps, every visit's difference model as a
    thumbnail on one colour scale, the quality per visit, the reference
    choice when it was chosen), then the details of the flagged visits and
    of ``visits``, then the run (completeness, configuration, geometry,
    stage times, a link to the Dask performance report when the store records
    one: ``attrs["performance_report"]``, a path, best absolute; a relative
    one is taken relative to the store's parent directory). See the module doc.
    """
    path = Path(path)
    data = ReportData.open(store)
    name = Path(data.store.path).name
    tract = data.skymap.tract if data.skymap else None
    title = f"bgdask report: {name}" + (f" (tract {tract})" if tract is not None else "")
    details: list[int] = []
    parts = []
    if data.ready:
        details = detail_visits(data, visits)
        parts.append(_summary(data, details))
        parts.append(_visit_table(data, details))
        figs = {f.name: f for f in summary_figures(data)}
        parts.append('<section id="seams">\n<h2>Seams</h2>\n' + _figure(figs["seams"], heading=False)
                     + "\n</section>")
        parts.append(_thumbnail_grid(data, thumbnails(data), fig_colorbar(data), details))
        parts.append('<section id="quality">\n<h2>Quality per visit</h2>\n' + _figure(figs["quality"], heading=False)
                     + "\n</section>")
        if "reference_choice" in figs:
            parts.append('<section id="reference-choice">\n<h2>Reference choice</h2>\n'
                         + _figure(figs["reference_choice"], heading=False) + "\n</section>")
        parts.append(_details(data, details))
    else:
        parts.append(_summary(data, details))
        parts.append('<p class="bad">The models are not computed yet: no table of results and no figures.</p>')
    parts += ['<section id="run">', _completeness(data), _configuration(data), _geometry(data),
              _times(data, path), "</section>"]
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>\n{_resource('report.css')}</style>",
        f"<script>\n{_resource('report.js')}</script>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">store <code>{_e(os.path.abspath(data.store.path))}</code>; input '
        f'<code>{_e(data.store.attrs.get("source", "?"))}</code>; bgdask '
        f'{_e(data.store.attrs.get("bgdask_version", "?"))}</p>',
        *parts,
        "</body>",
        "</html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(page) + "\n", encoding="utf-8")
    return path
