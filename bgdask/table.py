"""The per-visit table of a match: its columns, their meaning, and status codes.

One row per visit, indexed by visit. The same columns are shown by
``bgdask inspect``, stored in the output store (one array per column along
``visit``) and returned as ``MatchResult.table`` (a pandas DataFrame).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["COLUMNS", "STATUS_CODES", "visit_table", "table_to_arrays", "table_from_arrays"]

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
    "fit_rms": ("f8", np.nan, "RMS of binned difference minus model over the good superpixels (nJy)"),
    "status": ("i1", 0, "matched, reference, skipped (no overlap) or empty (no usable pixel)"),
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
        })
    return pd.DataFrame(rows, columns=["visit", *COLUMNS]).set_index("visit")


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
    """The DataFrame of stored columns (status codes back to names)."""
    import pandas as pd

    names = {code: s for s, code in STATUS_CODES.items()}
    data = {}
    for name in COLUMNS:
        values = np.asarray(arrays[name])
        data[name] = [names.get(int(c), "?") for c in values] if name == "status" else values
    return pd.DataFrame(data, index=pd.Index(np.asarray(visits, dtype=np.int64), name="visit"))
