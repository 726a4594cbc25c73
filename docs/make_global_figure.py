"""The figure of docs/global.md: the seams of the chain tract before matching,
after the reference method and after the global method, each with values at
the superpixels' centres and at their centroids.

    python docs/make_global_figure.py            # writes docs/img/global_seams.png

Per tract pixel, the largest |seam| over the pairs of visits that both have
data there, the seam of visits u, v being (sky_u + offset_u) - (sky_v +
offset_v) with the injected skies and the offsets the pipeline applies
(benchmarks/global_proto.py's measures). Runs ``bgdask.match`` with both
methods and both placements on the chain tract of benchmarks/bench_global.py
(about a minute).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))

import global_proto as gp  # noqa: E402
from bench_global import load  # noqa: E402

from bgdask.config import MatchConfig  # noqa: E402


def seam_map(t, offs):
    sm = t.sim.skymap
    H, W = sm.height, sm.width
    sky = {}
    for v in t.visits:
        img = np.full((H, W), np.nan)
        for p in t.patches(v):
            image, _, _, box = t.warps[(v, p)]
            inner = sm.inner_box(p)
            cut = (slice(inner.y0 - box.y0, inner.y1 - box.y0), slice(inner.x0 - box.x0, inner.x1 - box.x0))
            ok = np.isfinite(image[cut])
            val = t.sim.truth_sky(v, inner) + offs[(v, p)][cut]
            dst = img[inner.y0:inner.y1, inner.x0:inner.x1]
            dst[ok] = val[ok]
        sky[v] = img
    out = np.full((H, W), np.nan)
    vs = t.visits
    for a in range(len(vs)):
        for b in range(a + 1, len(vs)):
            d = np.abs(sky[vs[a]] - sky[vs[b]])
            out = np.fmax(out, d)
    return out


def pipeline(sim, **cfg):
    """``bgdask.match`` on the synchronous scheduler (the chain's far visits
    left unmatched by the reference method: on_no_overlap skip)."""
    import warnings

    import bgdask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bgdask.match(bgdask.open_warps(sim.warps, skymap=sim.skymap),
                            MatchConfig(on_no_overlap="skip", **cfg), scheduler="sync")


def main(path=HERE / "img" / "global_seams.png"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    sim, _ = load("chain")
    t = gp.Tract.from_sim(sim, MatchConfig())
    ref = sim.visits[0]
    runs = [("reference method, centre (Rubin's; 4 of 6 visits unmatched)", dict(placement="centre")),
            ("reference method, centroid (4 of 6 visits unmatched)", dict(placement="centroid")),
            ("global method, centre", dict(method="global", placement="centre")),
            ("global method, centroid (its default)", dict(method="global", placement="centroid"))]
    panels = [("before matching", {k: np.zeros(w[3].shape) for k, w in t.warps.items()})]
    for title, cfg in runs:
        panels.append((title, gp.pipeline_offsets(t, pipeline(sim, ref_visit=ref, **cfg))))
    ref_fp = sim.footprint(ref, sim.skymap.box, chip_gaps=False)
    fig = Figure(figsize=(9, 13.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1)
    norm = LogNorm(vmin=0.01, vmax=100)
    for ax, (title, offs) in zip(axes, panels):
        m = seam_map(t, offs)
        meas = gp.measure(t, ref, offs)
        im = ax.imshow(m, origin="lower", cmap="magma", norm=norm, interpolation="nearest")
        ax.contour(ref_fp, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"{title}\nseam RMS {meas.seam_in:.3g} nJy inside the reference's footprint (cyan), "
                     f"{meas.seam_out:.3g} nJy outside", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, location="bottom", shrink=0.7,
                 label="largest |seam| over the pairs of visits covering a pixel [nJy] (white: one visit)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
