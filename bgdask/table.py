"""The per-visit table of a match: its columns, their meaning, status codes and flags.

One row per visit, indexed by visit. The same columns are shown by
``bgdask inspect``, stored in the output store (one array per column along
``visit``) and returned as ``MatchResult.table`` (a pandas DataFrame).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["COLUMNS", "GLOBAL_COLUMNS", "QUALITY_COLUMNS", "PAIR_COLUMNS", "SEAM_PLANES", "STATUS_CODES", "visit_table",
           "with_quality", "flagged_visits", "table_to_arrays", "table_from_arrays", "pair_table", "pair_table_to_arrays",
           "pair_table_from_arrays", "shown_columns"]

#: What became of a visit.
STATUS_CODES = {"matched": 0, "reference": 1, "skipped": 2, "empty": 3}

#: Column -> (dtype in the store, fill value, meaning).
COLUMNS: dict[str, tuple[str, object, str]] = {
    "ref_chi2": ("f8", np.nan, "reference choice: chi2 per degree of freedom of a plane fit to the visit's stats image"),
    "ref_variance": ("f8", np.nan, "reference choice: mean variance of the visit's good superpixels"),
    "ref_coverage": ("i8", 0, "reference choice: number of good superpixels"),
    "ref_cost": ("f8", np.nan, "reference choice: the weighted cost (least cost is the reference)"),
    "n_good": ("i8", 0, "good superpixels of the difference model (overlap with the reference)"),
    "model_mean": ("f8", np.nan, "mean of the difference model over its good superpixels (nJy)"),
    "model_rms": ("f8", np.nan, "RMS of the difference model over its good superpixels (nJy)"),
    "fit_rms": ("f8", np.nan, "cross-validated RMS of binned difference minus model: each good superpixel "
                              "predicted from the others (checkerboard folds) (nJy)"),
    "status": ("i1", 0, "matched, reference, skipped (no overlap) or empty (no usable pixel)"),
    # the quality of the match (bgdask.quality)
    "extrap_frac": ("f8", np.nan, "fraction of the visit's usable pixels in superpixel bins it shares with the "
                                  "reference too little to be good: offset extrapolated there, not measured"),
    "match_rms": ("f8", np.nan, "after matching: RMS of the superpixel statistic of reference - matched visit "
                                "over their shared superpixels (nJy)"),
    "match_noise": ("f8", np.nan, "the RMS the variance planes alone predict for match_rms (nJy)"),
    "match_ratio": ("f8", np.nan, "match_rms / match_noise: near 1 when matched to the noise"),
    "flagged": ("b1", False, "match_ratio above the configuration's max_match_ratio"),
    # the global method's diagnostics (method: global; fill values for the reference method)
    "n_partners": ("i8", 0, "global method: number of visits it is paired with"),
    "resid_rms": ("f8", np.nan, "global method: weighted RMS of its pair equations' residuals after the solve (nJy)"),
    "expected_rms": ("f8", np.nan, "global method: the RMS resid_rms would have from the pixel noise alone "
                     "(from the variance planes, nJy)"),
    "n_unknowns": ("i8", 0, "global method: superpixels of its offset grid solved for"),
}

#: The columns only the global method fills.
GLOBAL_COLUMNS = ("n_partners", "resid_rms", "expected_rms", "n_unknowns")

#: The columns measured in stage C (:func:`with_quality`); the others are known after stage B.
QUALITY_COLUMNS = ("match_rms", "match_noise", "match_ratio", "flagged")

#: The planes of the store's ``seam`` map (visits' level spread per superpixel), in order.
SEAM_PLANES = ("before", "after")

#: The global method's per-pair table: column -> (dtype in the store, meaning).
#: One row per pair of visits (u < v) measured; stored along ``pair`` as
#: arrays named ``pair_<column>``.
PAIR_COLUMNS: dict[str, tuple[str, str]] = {
    "u": ("i8", "the pair's first visit"),
    "v": ("i8", "the pair's second visit (the data are the statistics of u - v)"),
    "n_overlap": ("i8", "superpixels with a pair equation (usable in both visits)"),
    "resid_rms": ("f8", "weighted RMS of the pair's equations' residuals after the solve (nJy)"),
    "expected_rms": ("f8", "the RMS resid_rms would have from the pixel noise alone (variance planes, nJy)"),
}


def visit_table(visits, ref_criteria: Mapping[int, Mapping[str, float]], models: Mapping) -> "pandas.DataFrame":  # noqa: F821
    """The table of ``visits`` from the reference-choice criteria (empty when
    the reference was given) and the visits' models (:class:`~bgdask.background.VisitModel`)."""
    import pandas as pd

    rows = []
    for v in visits:
        m = models[v]
        r = ref_criteria.get(v, {})
        rows.append({
            "visit": v,
            "ref_chi2": r.get("ref_chi2", np.nan),
            "ref_variance": r.get("ref_variance", np.nan),
            "ref_coverage": r.get("ref_coverage", 0),
            "ref_cost": r.get("ref_cost", np.nan),
            "n_good": m.n_good,
            "model_mean": m.model_mean,
            "model_rms": m.model_rms,
            "fit_rms": m.fit_rms,
            "status": m.status,
            "extrap_frac": m.extrap_frac,
            **{name: COLUMNS[name][1] for name in QUALITY_COLUMNS},
            **{name: getattr(m, name, COLUMNS[name][1]) for name in GLOBAL_COLUMNS},
        })
    return pd.DataFrame(rows, columns=["visit", *COLUMNS]).set_index("visit")


def with_quality(table, figures, max_match_ratio: float):
    """The table with the quality of stage C: ``figures`` are
    :class:`~bgdask.quality.VisitQuality` (visits without one keep NaN); a
    visit is flagged when its match_ratio exceeds ``max_match_ratio``."""
    table = table.copy()
    for q in figures:
        table.loc[q.visit, ["match_rms", "match_noise", "match_ratio"]] = [q.match_rms, q.match_noise, q.match_ratio]
    with np.errstate(invalid="ignore"):
        table["flagged"] = np.asarray(table["match_ratio"], dtype=float) > max_match_ratio
    return table


def flagged_visits(table) -> list[int]:
    """The visits flagged in ``table``, in order."""
    return [int(v) for v in table.index[np.asarray(table["flagged"], dtype=bool)]]


def table_to_arrays(table) -> dict[str, np.ndarray]:
    """Column -> array in the store's dtype (status as its code)."""
    out = {}
    for name, (dtype, _, _) in COLUMNS.items():
        values = table[name]
        if name == "status":
            values = [STATUS_CODES[s] for s in values]
        out[name] = np.asarray(values, dtype=dtype)
    return out


def table_from_arrays(visits, arrays: Mapping[str, np.ndarray]) -> "pandas.DataFrame":  # noqa: F821
    """The DataFrame of stored columns (status codes back to names; a column
    a store of an earlier version lacks gets its fill value)."""
    import pandas as pd

    names = {code: s for s, code in STATUS_CODES.items()}
    data = {}
    for name, (dtype, fill, _) in COLUMNS.items():
        values = np.asarray(arrays[name]) if name in arrays else np.full(len(visits), fill, dtype=dtype)
        data[name] = [names.get(int(c), "?") for c in values] if name == "status" else values
    return pd.DataFrame(data, index=pd.Index(np.asarray(visits, dtype=np.int64), name="visit"))


def pair_table(rows: Mapping[tuple[int, int], Mapping[str, float]]) -> "pandas.DataFrame":  # noqa: F821
    """The per-pair table from the solve's ``{(u, v): {n_overlap, resid_rms, expected_rms}}``,
    one row per pair, sorted."""
    import pandas as pd

    data = [{"u": u, "v": v, **{n: r[n] for n in list(PAIR_COLUMNS)[2:]}} for (u, v), r in sorted(rows.items())]
    frame = pd.DataFrame(data, columns=list(PAIR_COLUMNS))
    return frame.astype({n: dt for n, (dt, _) in PAIR_COLUMNS.items()})


def pair_table_to_arrays(table) -> dict[str, np.ndarray]:
    """Store array name (``pair_<column>``) -> array in the store's dtype."""
    return {f"pair_{n}": np.asarray(table[n], dtype=dt) for n, (dt, _) in PAIR_COLUMNS.items()}


def pair_table_from_arrays(arrays: Mapping[str, np.ndarray]) -> "pandas.DataFrame":  # noqa: F821
    import pandas as pd

    return pd.DataFrame({n: np.asarray(arrays[f"pair_{n}"]) for n in PAIR_COLUMNS})


def shown_columns(table) -> list[str]:
    """The columns worth printing: the global method's only where a visit has them."""
    has_global = "n_partners" in table and bool(np.any(np.asarray(table["n_partners"]) > 0))
    return [c for c in table.columns if has_global or c not in GLOBAL_COLUMNS]
