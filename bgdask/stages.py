"""The three stages of a match, as Dask graphs built from the (visit, patch) collection.

* **Stage A** (only without a reference visit): per warp, superpixel sums;
  per visit, a fixed binary tree of sums and the reference-choice criteria.
* **Stage B**: per patch, the superpixel sums of ref - visit; per visit, a
  tree of sums and the difference model; every warp's usable pixel count.
* **Stage C**: per chunk, image + offset. :func:`matched_image` makes it a
  lazy Dask array (the ``matched`` Dataset of :func:`bgdask.match`);
  :func:`write_graph` makes it the tasks that write a store (rows, then each
  warp's coarse grid and its ``done`` flag).

The graphs are written directly as layers of tasks (a few per warp, cheap to
build) over the collection's arrays. Where a chunk of the collection is a
read task of :func:`bgdask.open_warps`, a stage task reads the same rows
itself instead of depending on it, so no warp is held in memory for its
consumers (a reference warp, used by every visit's difference, is read by
each); a chunk of any other Dataset is an ordinary dependency.

The trees depend only on the list of warps (visit, then patch order), never
on the scheduler, so every scheduler gives the same numbers bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from . import background as bg
from .collection import REQUIRED_COORDS, REQUIRED_VARIABLES, BlockRead
from .config import MatchConfig
from .errors import ConfigError, InputError
from .geometry import Box, SkyMap, coarse_cells, coarse_shape, infer_skymap, superpixel_shape
from .io.warp import PLANE_DTYPES, PLANE_FILL
from .kernels.stats import bad_pixels, nonpositive_variance
from .masks import plane_bits
from .quality import QualityPartial, Spread, inner_part, quality_partial, seam_map, visit_levels, visit_quality
from .reference import choose_reference, visit_criteria

__all__ = ["Tract", "Solution", "tract_of", "stage_a", "stage_b", "matched_arrays", "coarse_geometry", "write_graph",
           "quality_graph"]


# -- what the stages know of a Dataset ------------------------------------------

@dataclass
class Tract:
    """A Dataset of warps, decoded once: index, boxes, geometry, mask layout,
    and each chunk of each plane as a read spec or a graph key."""

    ds: Any
    visits: list[int]
    patches: list[int]
    present: np.ndarray
    boxes: dict[int, Box]
    skymap: SkyMap
    mask_planes: dict[str, int]
    row_starts: list[int]
    row_sizes: list[int]
    token: str

    def __post_init__(self):
        self._vidx = {v: i for i, v in enumerate(self.visits)}
        self._pidx = {p: i for i, p in enumerate(self.patches)}
        #: (visit, patch) of every present warp, visit-major
        self.keys = [(v, p) for vi, v in enumerate(self.visits) for pi, p in enumerate(self.patches)
                     if self.present[vi, pi]]
        self.keys_of = {v: [k for k in self.keys if k[0] == v] for v in self.visits}
        self._arrays = {plane: self.ds[plane].data for plane in REQUIRED_VARIABLES}
        self._specs = {}
        for plane, arr in self._arrays.items():
            layer = arr.__dask_graph__().layers.get(arr.name)
            self._specs[plane] = getattr(layer, "specs", None)

    def index(self, key: tuple[int, int]) -> tuple[int, int]:
        return self._vidx[key[0]], self._pidx[key[1]]

    def array(self, plane: str):
        return self._arrays[plane]

    def blocks(self, plane: str, vi: int, pi: int) -> list:
        """The chunks of one warp's plane: :class:`BlockRead` specs where the
        collection's chunk is a read task, else references to the chunk."""
        specs = self._specs[plane]
        if specs is not None:
            return list(specs[vi, pi])
        from ._compat import TaskRef

        name = self._arrays[plane].name
        return [TaskRef((name, vi, pi, yi, 0)) for yi in range(len(self.row_starts))]

    def rows_of(self, yi: int) -> slice:
        return slice(self.row_starts[yi], self.row_starts[yi] + self.row_sizes[yi])


def _decode(value):
    if isinstance(value, str):
        import json

        return json.loads(value)
    return value


def tract_of(ds, skymap: SkyMap | None = None) -> Tract:
    """Check that ``ds`` is a collection of warps and decode what the stages need."""
    missing = [n for n in REQUIRED_VARIABLES if n not in ds.data_vars]
    missing += [n for n in REQUIRED_COORDS if n not in ds.variables]
    if missing:
        raise InputError(f"the Dataset lacks {', '.join(missing)}: open warps with bgdask.open_warps")
    for name in REQUIRED_VARIABLES:
        if ds[name].dims != ("visit", "patch", "y", "x"):
            raise InputError(f"the Dataset's {name} has dims {ds[name].dims}, not (visit, patch, y, x)")
        if ds[name].chunks is None:
            ds = ds.chunk({"visit": 1, "patch": 1})
    ds = ds.unify_chunks()
    for name in REQUIRED_VARIABLES:
        ch = ds[name].data.chunks
        if set(ch[0]) != {1} or set(ch[1]) != {1} or len(ch[3]) != 1:
            ds = ds.chunk({"visit": 1, "patch": 1, "x": -1})
            break
    visits = [int(v) for v in ds.visit.values]
    patches = [int(p) for p in ds.patch.values]
    present = (np.asarray(ds["present"].values, dtype=bool) if "present" in ds
               else np.ones((len(visits), len(patches)), dtype=bool))
    cols = [np.asarray(ds[c].values) for c in ("x0", "y0", "width", "height")]
    boxes = {p: Box(*(int(c[i]) for c in cols)) for i, p in enumerate(patches)}
    if skymap is None:
        d = _decode(ds.attrs.get("skymap"))
        skymap = SkyMap.from_dict(d) if d else infer_skymap(boxes, tract=ds.attrs.get("tract"))
    mask_planes = {str(k): int(b) for k, b in (_decode(ds.attrs.get("mask_planes")) or {}).items()}
    if not mask_planes:
        raise InputError("the Dataset has no attrs['mask_planes'] (mask plane name -> bit)")
    ych = ds["image"].data.chunks[2]
    starts = [int(s) for s in np.cumsum((0,) + ych[:-1])]
    token = hashlib.sha1("|".join(ds[n].data.name for n in REQUIRED_VARIABLES).encode()).hexdigest()[:16]
    return Tract(ds, visits, patches, present, boxes, skymap, mask_planes, starts, [int(r) for r in ych], token)


# -- reading a warp inside a task -------------------------------------------------

def _rows(blocks, box: Box, y_starts) -> list[np.ndarray]:
    """The warp's rows from its chunks (read specs or computed chunks)."""
    out = []
    for spec, y0 in zip(blocks, y_starts):
        if y0 >= box.height:
            break
        if isinstance(spec, BlockRead):
            out.append(spec.rows())
        else:
            out.append(np.asarray(spec)[0, 0, : box.height - y0, : box.width])
    return out


def _whole(blocks, box: Box, y_starts) -> np.ndarray:
    parts = _rows(blocks, box, y_starts)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _whole_mask(blocks, box: Box, y_starts) -> tuple[np.ndarray, int]:
    """A warp's mask, and the bits its file set without naming them."""
    parts, unnamed = [], 0
    for spec, y0 in zip(blocks, y_starts):
        if y0 >= box.height:
            break
        if isinstance(spec, BlockRead):
            rows, bits = spec.rows_and_unnamed()
            parts.append(rows)
            unnamed |= bits
        else:
            parts.append(np.asarray(spec)[0, 0, : box.height - y0, : box.width])
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), unnamed


#: The planes every task reading a warp's pixels for a statistic reads: the
#: variance too, since pixels of zero or negative variance are bad.
READ_PLANES = ("image", "mask", "variance")


def _planes_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits):
    """A warp's image and variance, its bad pixels (:func:`~bgdask.kernels.stats.bad_pixels`:
    bad mask planes, non-finite image, zero or negative variance) and its
    note: (key, mask bits set without a name, pixels of zero or negative variance)."""
    image = _whole(image_blocks, box, y_starts)
    mask, unnamed = _whole_mask(mask_blocks, box, y_starts)
    variance = _whole(var_blocks, box, y_starts)
    bad = bad_pixels(mask, bad_bits, image, variance)
    return image, variance, bad, (key, unnamed, nonpositive_variance(variance))


def _image_and_bad(*args):
    """:func:`_planes_and_bad` without the variance: (image, bad, note)."""
    image, _, bad, note = _planes_and_bad(*args)
    return image, bad, note


def _leaf_a(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits, grid, cfg):
    image, bad, _ = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    return bg.warp_partial(key, image, bad, box, grid, cfg)


def _leaf_b(ref_key, ref_image, ref_mask, ref_var, key, image_blocks, mask_blocks, var_blocks, box, y_starts,
            bad_bits, grid, cfg, inner=None, partial=bg.difference_partial):
    r_image, r_bad, r_note = _image_and_bad(ref_key, ref_image, ref_mask, ref_var, box, y_starts, bad_bits)
    image, bad, note = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    part = partial(ref_key, r_image, r_bad, key, image, bad, box, grid, cfg).noted(r_note, note)
    return part if inner is None else replace(part, overlap=bg.overlap_bins(bad, r_bad, box, inner, grid, cfg))


def _leaf_b_sums(*args):
    """:func:`_leaf_b` with the centroid sums (``placement: centroid``)."""
    return _leaf_b(*args, partial=bg.difference_partial_sums)


def _leaf_count(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits, grid=None, cfg=None,
                inner=None):
    _, bad, note = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    part = bg.usable_partial(key, bad).noted(note)
    return part if inner is None else replace(part, overlap=bg.overlap_bins(bad, None, box, inner, grid, cfg))


# -- graph building ------------------------------------------------------------------

class _Graph:
    """Tasks of one stage, over the collection's arrays."""

    def __init__(self, tract: Tract, stage: str, extra: str = ""):
        self.tract = tract
        self.stage, self.token = stage, f"{tract.token}{extra}"
        self.name = f"bgdask-{stage}-{self.token}"
        self.layer: dict = {}

    def key(self, kind: str, *index) -> tuple:
        """A task's key: its name starts ``bgdask-<stage>-<kind>``, which is
        how the dashboard and task streams group it (tokens come after)."""
        return (f"bgdask-{self.stage}-{kind}-{self.token}", *index)

    def task(self, key, fn, *args):
        from ._compat import Task

        self.layer[key] = Task(key, fn, *args)
        return key

    def data(self, key, value):
        from ._compat import DataNode

        self.layer[key] = DataNode(key, value)
        return key

    def ref(self, key):
        from ._compat import TaskRef

        return TaskRef(key)

    def seq(self, items: list):
        """A list argument (its references resolved when the task runs)."""
        from ._compat import List, TaskRef

        return List(*items) if any(isinstance(i, TaskRef) for i in items) else list(items)

    def planes(self, vi: int, pi: int, *names: str) -> list:
        return [self.seq(self.tract.blocks(n, vi, pi)) for n in names]

    def tree(self, kind: str, index, leaves: list, add=bg.Partial.__add__):
        """The root of a fixed binary tree of ``add`` over ``leaves`` (keys):
        pairs (0, 1), (2, 3), ..., an odd last one carried up, level by level."""
        level, items = 0, list(leaves)
        while len(items) > 1:
            paired = []
            for i in range(0, len(items) - 1, 2):
                paired.append(self.task(self.key(kind, *index, level, i // 2), add,
                                        self.ref(items[i]), self.ref(items[i + 1])))
            if len(items) % 2:
                paired.append(items[-1])
            items, level = paired, level + 1
        return items[0]

    def graph(self, *extra):
        from dask.highlevelgraph import HighLevelGraph

        deps = [self.tract.array(p) for p in REQUIRED_VARIABLES] + list(extra)
        return HighLevelGraph.from_collections(self.name, self.layer, dependencies=deps)


def _common(tract: Tract, cfg: MatchConfig):
    grid = superpixel_shape(tract.skymap.width, tract.skymap.height, cfg.x_bin, cfg.y_bin)
    return grid, plane_bits(tract.mask_planes, cfg.bad_mask_planes)


def stage_a(tract: Tract, cfg: MatchConfig, executor) -> tuple[int, dict]:
    """The reference visit and every visit's reference-choice criteria and cost."""
    graph, keys = graph_a(tract, cfg)
    criteria = executor.compute(graph, keys, "stage A: reference choice")
    return choose_reference({c.visit: c for c in criteria}, cfg)


def graph_a(tract: Tract, cfg: MatchConfig):
    """Stage A's graph and its outputs' keys (one ReferenceCriteria per visit)."""
    grid, bits = _common(tract, cfg)
    g = _Graph(tract, "a", cfg_token(cfg))
    ys = tract.row_starts
    figs = []
    for v in tract.visits:
        leaves = []
        for key in tract.keys_of[v]:
            vi, pi = tract.index(key)
            leaves.append(g.task(g.key("warp", vi, pi), _leaf_a, key, *g.planes(vi, pi, *READ_PLANES),
                                 tract.boxes[key[1]], ys, bits, grid, cfg))
        if not leaves:
            continue
        total = g.tree("sum", (tract._vidx[v],), leaves)
        figs.append(g.task(g.key("criteria", tract._vidx[v]), visit_criteria, g.ref(total), grid, cfg, v))
    return g.graph(), figs


def stage_b(tract: Tract, cfg: MatchConfig, ref: int, executor) -> tuple[dict, dict, dict]:
    """Every visit's difference model (the reference's is zero), every
    warp's number of usable pixels, and every warp's notes (:func:`read_notes`).
    Stage B reads every warp whole, so these cover them all."""
    graph, jobs, rest, order = graph_b(tract, cfg, ref)
    results = executor.compute(graph, jobs + rest, "stage B: difference models")
    grid, _ = _common(tract, cfg)
    models = {v: model for v, (model, _) in zip(order, results[: len(jobs)])}
    models[ref] = bg.VisitModel.zero(ref, grid, "reference")
    pixels, notes = read_notes([read for _, read in results[: len(jobs)]] + list(results[len(jobs):]))
    for v in tract.visits:               # a visit with no warp at all
        models.setdefault(v, bg.VisitModel.zero(v, grid, "empty"))
    return dict(sorted(models.items())), pixels, notes


def read_notes(parts) -> tuple[dict, dict]:
    """From partials (:class:`~bgdask.background.Partial`) covering every
    warp: each warp's usable pixels, and its notes (mask bits set without a
    name, pixels of zero or negative variance)."""
    pixels: dict[tuple[int, int], int] = {}
    notes: dict[tuple[int, int], tuple[int, int]] = {}
    for part in parts:
        pixels.update(part.usable_pixels)
        notes.update((key, (unnamed, n)) for key, unnamed, n in part.notes)
    return pixels, notes


def graph_b(tract: Tract, cfg: MatchConfig, ref: int):
    """Stage B's graph; the keys of the visits' (model, usable counts), of the
    usable counts of reference warps no difference reads, and those visits."""
    grid, bits = _common(tract, cfg)
    g = _Graph(tract, "b", cfg_token(cfg, ref))
    ys = tract.row_starts
    present = set(tract.keys)
    leaf_b = _leaf_b_sums if cfg.value_placement == "centroid" else _leaf_b
    jobs, order, read_refs = [], [], set()
    for v in tract.visits:
        if v == ref:
            continue
        leaves = []
        for key in tract.keys_of[v]:
            vi, pi = tract.index(key)
            box = tract.boxes[key[1]]
            inner = tract.skymap.inner_box(key[1])
            ref_key = (ref, key[1])
            own = g.planes(vi, pi, *READ_PLANES)
            if ref_key in present:
                ri, _ = tract.index(ref_key)
                leaves.append(g.task(g.key("diff", vi, pi), leaf_b, ref_key, *g.planes(ri, pi, *READ_PLANES),
                                     key, *own, box, ys, bits, grid, cfg, inner))
                read_refs.add(ref_key)
            else:
                leaves.append(g.task(g.key("count", vi, pi), _leaf_count, key, *own, box, ys, bits, grid, cfg,
                                     inner))
        if not leaves:
            continue
        total = g.tree("sum", (tract._vidx[v],), leaves)
        jobs.append(g.task(g.key("model", tract._vidx[v]), bg.visit_model, g.ref(total), grid, cfg, v))
        order.append(v)
    rest = []
    for key in tract.keys:
        if key[0] == ref and key not in read_refs:
            vi, pi = tract.index(key)
            rest.append(g.task(g.key("count", vi, pi), _leaf_count, key, *g.planes(vi, pi, *READ_PLANES),
                               tract.boxes[key[1]], ys, bits))
    return g.graph(), jobs, rest, order


def cfg_token(cfg: MatchConfig, *extra) -> str:
    return "-" + hashlib.sha1((cfg.to_json() + repr(extra)).encode()).hexdigest()[:10]


# -- stage C -----------------------------------------------------------------------

@dataclass(frozen=True)
class Solution:
    """What stages A and B decided: the reference, each visit's model, and
    which warps get their visit's offset (unusable warps pass unchanged)."""

    reference: int
    models: Mapping[int, bg.VisitModel]
    usable_pixels: Mapping[tuple[int, int], int]
    #: the global method's per-pair table (pandas DataFrame) and its solve's
    #: figures (:func:`bgdask.global_stage.solve_info_attrs`); None for the reference method
    pairs: Any = None
    solve_info: Mapping[str, Any] | None = None
    #: the mask layout of the matched warps: the collection's, plus a plane
    #: UNNAMED_<bit> for each bit some file set without naming it (None: the collection's)
    mask_planes: Mapping[str, int] | None = None

    def matches(self, key: tuple[int, int]) -> bool:
        """Whether a warp gets its visit's offset (unusable warps pass unchanged)."""
        return self.models[key[0]].status == "matched" and self.usable_pixels.get(key, 1) > 0


def _coarse_layer(g: _Graph, tract: Tract, cfg: MatchConfig, sol: Solution, keys) -> dict:
    """Per visit its model (data), per warp its coarse grid (a task)."""
    cshape = coarse_shape(tract.skymap.width, tract.skymap.height, cfg.binning)
    model_keys = {}
    for v in sorted({k[0] for k in keys}):
        model_keys[v] = g.data(g.key("model", tract._vidx[v]), sol.models[v])
    out = {}
    for key in keys:
        vi, pi = tract.index(key)
        out[key] = g.task(g.key("coarse", vi, pi), bg.warp_coarse, g.ref(model_keys[key[0]]),
                          tract.boxes[key[1]], cfg, cshape)
    return out


def _matched_block(spec, coarse, box: Box, rows: slice, width: int, apply: bool, cfg: MatchConfig):
    """One chunk of the matched image (padded like the collection's)."""
    (image,) = _rows([spec], box, [rows.start]) or [np.empty((0, box.width), np.float32)]
    out = np.full((1, 1, rows.stop - rows.start, width), PLANE_FILL["image"], dtype=PLANE_DTYPES["image"])
    local = slice(rows.start, rows.start + image.shape[0])
    out[0, 0, : image.shape[0], : box.width] = bg.matched_rows(image, coarse, box, local, apply, cfg)
    return out


def coarse_geometry(tract: Tract, cfg: MatchConfig):
    """The tract's coarse grid shape, each patch's first coarse cell (ky0,
    kx0) and cell counts, and the largest counts (the padded shape)."""
    cshape = coarse_shape(tract.skymap.width, tract.skymap.height, cfg.binning)
    cells = {p: coarse_cells(b, cfg.binning, cshape) for p, b in tract.boxes.items()}
    first = {p: (ky[0], kx[0]) for p, (kx, ky) in cells.items()}
    size = {p: (ky[1] - ky[0], kx[1] - kx[0]) for p, (kx, ky) in cells.items()}
    padded = (max(s[0] for s in size.values()), max(s[1] for s in size.values()))
    return cshape, first, size, padded


def matched_arrays(tract: Tract, cfg: MatchConfig, sol: Solution) -> dict:
    """Stage C, lazily: the matched ``image`` (the collection's chunks) and
    every warp's ``offset_coarse`` grid (padded with NaN), as Dask arrays."""
    import dask.array as da

    g = _Graph(tract, "c", cfg_token(cfg, sol.reference, id(sol)))
    coarse_keys = _coarse_layer(g, tract, cfg, sol, tract.keys)
    src = tract.array("image")
    name, cname = g.key("matched")[0], g.key("offset-coarse")[0]
    width = src.shape[3]
    _, _, _, padded = coarse_geometry(tract, cfg)
    present = set(tract.keys)
    for vi, v in enumerate(tract.visits):
        for pi, p in enumerate(tract.patches):
            key = (v, p)
            if key not in present:
                for yi in range(len(tract.row_starts)):
                    g.task((name, vi, pi, yi, 0), _fill, tract.row_sizes[yi], width)
                g.task((cname, vi, pi, 0, 0), _padded_coarse, None, padded)
                continue
            box = tract.boxes[p]
            for yi, spec in enumerate(tract.blocks("image", vi, pi)):
                g.task((name, vi, pi, yi, 0), _matched_block, spec, g.ref(coarse_keys[key]), box,
                       tract.rows_of(yi), width, sol.matches(key), cfg)
            g.task((cname, vi, pi, 0, 0), _padded_coarse, g.ref(coarse_keys[key]), padded)
    mname = None
    if sol.mask_planes is not None and dict(sol.mask_planes) != tract.mask_planes:
        # bits without a name found: the matched mask carries them as UNNAMED planes
        mname = g.key("matched-mask")[0]
        for vi in range(len(tract.visits)):
            for pi in range(len(tract.patches)):
                for yi, spec in enumerate(_retarget(tract.blocks("mask", vi, pi), sol.mask_planes)):
                    g.task((mname, vi, pi, yi, 0), _mask_block if isinstance(spec, BlockRead) else np.asarray,
                           spec)
    # layers each named as the array made of it: the coarse grids' layer
    # depends on the one holding the models and the image
    from dask.highlevelgraph import HighLevelGraph

    grid_layer = {k: g.layer.pop(k) for k in [k for k in g.layer if k[0] == cname]}
    mask_layer = {k: g.layer.pop(k) for k in [k for k in g.layer if k[0] == mname]}
    g.name = name
    graph = g.graph()
    layers, deps = {**graph.layers, cname: grid_layer}, {**graph.dependencies, cname: {name}}
    if mname:
        layers[mname], deps[mname] = mask_layer, set(graph.dependencies[name])
    graph = HighLevelGraph(layers, deps)
    image = da.Array(graph, name, chunks=src.chunks, dtype=PLANE_DTYPES["image"],
                     meta=np.empty((0, 0, 0, 0), dtype=PLANE_DTYPES["image"]))
    nv, npch = len(tract.visits), len(tract.patches)
    grids = da.Array(graph, cname, chunks=((1,) * nv, (1,) * npch, (padded[0],), (padded[1],)),
                     dtype=np.float64, meta=np.empty((0, 0, 0, 0)))
    out = {"image": image, "offset_coarse": grids}
    if mname:
        out["mask"] = da.Array(graph, mname, chunks=tract.array("mask").chunks, dtype=PLANE_DTYPES["mask"],
                               meta=np.empty((0, 0, 0, 0), dtype=PLANE_DTYPES["mask"]))
    return out


def _padded_coarse(coarse, shape):
    out = np.full((1, 1, *shape), np.nan)
    if coarse is not None:
        grid = coarse[0]
        out[0, 0, : grid.shape[0], : grid.shape[1]] = grid
    return out


def _fill(rows: int, width: int):
    return np.full((1, 1, rows, width), PLANE_FILL["image"], dtype=PLANE_DTYPES["image"])


@dataclass(frozen=True)
class _Measure:
    """How a stage-C task measures the quality of its block (:mod:`bgdask.quality`):
    the warp's box, its patch's inner box, the bad planes' bits, the
    superpixel grid, whether the warp is the reference's."""

    box: Box
    inner: Box
    bits: int
    grid: tuple[int, int]
    cfg: MatchConfig
    is_ref: bool

    def partial(self, rows: slice, image, mask, variance, matched, ref) -> QualityPartial:
        """The quality sums of rows ``rows`` (local to the box) of the warp;
        ``ref``: the reference's (image, mask, variance) rows, or None."""
        cut = inner_part(self.box, self.inner, rows)
        if cut is None:
            return QualityPartial()
        r, c, part = cut
        img = image[r, c]
        bad = bad_pixels(mask[r, c], self.bits, img, variance[r, c])
        if ref is not None:
            r_img, r_var = ref[0][r, c], ref[2][r, c]
            ref = (r_img, bad_pixels(ref[1][r, c], self.bits, r_img, r_var), r_var)
        return quality_partial(matched[r, c], None if self.is_ref else img, bad, variance[r, c], ref, part,
                               self.grid, self.cfg, self.cfg.replace(grid_statistic="MEAN"))


def _measure_of(tract: Tract, sol: Solution, key, n: int, bits: int, grid, cfg: MatchConfig):
    """How to measure warp ``key`` (of ``n`` chunks): its :class:`_Measure`, and
    the reference's chunks of image, mask and variance on its patch (None
    for the reference's own warps and where the reference lacks the patch)."""
    measure = _Measure(tract.boxes[key[1]], tract.skymap.inner_box(key[1]), bits, grid, cfg,
                       key[0] == sol.reference)
    ri, pi = tract.index((sol.reference, key[1]))
    if key[0] == sol.reference or not tract.present[ri, pi]:
        return measure, [[None] * n] * 3
    return measure, [tract.blocks(plane, ri, pi) for plane in ("image", "mask", "variance")]


def _ref_rows(box: Box, start: int, image_spec, mask_spec, var_spec):
    if image_spec is None:
        return None
    return tuple(_rows([spec], box, [start])[0] for spec in (image_spec, mask_spec, var_spec))


def _write(store, vi, pi, box, rows, image_spec, mask_spec, var_spec, coarse, apply, cfg, finish,
           measure: _Measure | None = None, ref_image=None, ref_mask=None, ref_var=None):
    """Stage C on one chunk of one warp: the matched rows, its mask and
    variance, written to the store; with ``finish`` also the warp's coarse
    grid and its done flag (a warp of one chunk is one task). With
    ``measure``, returns the chunk's quality sums (against the reference's
    rows ``ref_*`` when given)."""
    (image,) = _rows([image_spec], box, [rows.start])
    (mask,) = _rows([mask_spec], box, [rows.start])
    (variance,) = _rows([var_spec], box, [rows.start])
    local = slice(rows.start, rows.start + image.shape[0])
    matched = bg.matched_rows(image, coarse, box, local, apply, cfg)
    variance = np.asarray(variance, dtype=np.float32)
    crcs = store.write_rows(vi, pi, rows.start, matched, mask, variance)
    if finish:
        store.finish_warp(vi, pi, coarse[0], crcs)
    quality = None
    if measure is not None:
        ref = _ref_rows(box, rows.start, ref_image, ref_mask, ref_var)
        quality = measure.partial(local, image, mask, variance, matched, ref)
    return crcs, quality


def _quality(written):
    """The quality sums of a block: from :func:`_write`'s (CRCs, sums), or as they are."""
    return written[1] if isinstance(written, tuple) else written


def _add_quality(a, b) -> QualityPartial:
    return _quality(a) + _quality(b)


def _visit_quality(total, *args):
    return visit_quality(_quality(total), *args)


def _visit_levels(total, *args):
    return visit_levels(_quality(total), *args)


def _retarget(specs: list, layout) -> list:
    """Mask read specs remapping to ``layout`` (the solution's, which may
    have UNNAMED planes the collection's lacks)."""
    if layout is None:
        return specs
    return [dataclasses.replace(s, target=dict(layout))
            if isinstance(s, BlockRead) and s.target is not None and s.target != layout else s for s in specs]


def _mask_block(spec):
    return spec.padded()


def _measure_stored(store, vi, pi, box, rows, image_spec, mask_spec, var_spec, measure: _Measure,
                    ref_image=None, ref_mask=None, ref_var=None) -> QualityPartial:
    """The quality sums of a chunk already written (a resumed run): the
    matched rows read back from the store, the rest as :func:`_write` has them."""
    (image,) = _rows([image_spec], box, [rows.start])
    (mask,) = _rows([mask_spec], box, [rows.start])
    (variance,) = _rows([var_spec], box, [rows.start])
    local = slice(rows.start, rows.start + image.shape[0])
    matched = store.read_rows(vi, pi, "image", local, box.width)
    ref = _ref_rows(box, rows.start, ref_image, ref_mask, ref_var)
    return measure.partial(local, image, mask, np.asarray(variance, dtype=np.float32), matched, ref)


def _collect(seam, *figures):
    return seam, list(figures)


def _finish(store, vi, pi, coarse, *written) -> None:
    """Mark a warp done once all its chunks have landed (``written``: each
    block's (CRCs, quality sums), in row order: the CRCs make the warp's checksum)."""
    store.finish_warp(vi, pi, coarse[0], [c for crcs, _ in written for c in crcs])


def write_graph(tract: Tract, cfg: MatchConfig, sol: Solution, store, keys, *,
                quality: bool = True) -> tuple[Any, list, Any]:
    """Tasks writing the matched warps ``keys`` into ``store``; returns the
    graph, one key per warp (done when that warp is done), and the key of
    the match's quality (None with ``quality=False``).

    The quality (:mod:`bgdask.quality`) is measured by the same tasks, on
    the rows they write (and on the reference's rows of the same patch);
    warps already done (a resumed run) are measured from the store. Its key
    holds (the seam map, a :class:`~bgdask.quality.VisitQuality` per visit
    with warps); the partials add per visit, and the visits' levels combine,
    in fixed trees."""
    g = _Graph(tract, "write", cfg_token(cfg, sol.reference, store.path, quality))
    coarse_keys = _coarse_layer(g, tract, cfg, sol, keys)
    grid, bits = _common(tract, cfg)
    todo = set(keys)
    ends, leaves = [], {}
    for key in tract.keys:
        if key not in todo and not quality:
            continue
        vi, pi = tract.index(key)
        box = tract.boxes[key[1]]
        specs = [tract.blocks(plane, vi, pi) for plane in ("image", "mask", "variance")]
        specs[1] = _retarget(specs[1], sol.mask_planes)
        n = sum(1 for y0 in tract.row_starts if y0 < box.height)
        measure, ref_specs = (None, [[None] * n] * 3)
        if quality:
            measure, ref_specs = _measure_of(tract, sol, key, n, bits, grid, cfg)
        blocks = []
        for yi in range(n):
            refs = (ref_specs[0][yi], ref_specs[1][yi], ref_specs[2][yi])
            if key in todo:
                blocks.append(g.task(g.key("rows", vi, pi, yi), _write, store, vi, pi, box, tract.rows_of(yi),
                                     specs[0][yi], specs[1][yi], specs[2][yi], g.ref(coarse_keys[key]),
                                     sol.matches(key), cfg, n == 1, measure, *refs))
            else:
                blocks.append(g.task(g.key("measure", vi, pi, yi), _measure_stored, store, vi, pi, box,
                                     tract.rows_of(yi), specs[0][yi], specs[1][yi], specs[2][yi], measure, *refs))
        leaves.setdefault(key[0], []).extend(blocks)
        if key not in todo:
            continue
        if n == 1:
            ends.append(blocks[0])
        else:
            ends.append(g.task(g.key("done", vi, pi), _finish, store, vi, pi, g.ref(coarse_keys[key]),
                               *[g.ref(k) for k in blocks]))
    if not quality:
        return g.graph(), ends, None
    return g.graph(), ends, _quality_trees(g, tract, grid, cfg, leaves)


def _quality_trees(g: _Graph, tract: Tract, grid, cfg: MatchConfig, leaves: dict) -> tuple:
    """Per visit a tree over its blocks' quality partials (``leaves``: visit
    -> keys in patch, then row order), its figures and levels; a tree over
    the visits' levels; the key of (seam map, figures)."""
    figures, levels = [], []
    for v, blocks in leaves.items():
        vi = tract._vidx[v]
        total = g.tree("quality", (vi,), blocks, _add_quality)
        figures.append(g.task(g.key("visit-quality", vi), _visit_quality, g.ref(total), grid, cfg, v))
        levels.append(g.task(g.key("levels", vi), _visit_levels, g.ref(total), grid, cfg))
    spread = g.tree("spread", (), levels, Spread.__add__)
    seam = g.task(g.key("seam"), seam_map, g.ref(spread))
    return g.task(g.key("quality"), _collect, g.ref(seam), *[g.ref(k) for k in figures])


def _measure_chunk(box, rows, image_spec, mask_spec, var_spec, chunk, measure: _Measure,
                   ref_image=None, ref_mask=None, ref_var=None) -> QualityPartial:
    """The quality sums of one chunk of a matched image held as a Dask array."""
    (image,) = _rows([image_spec], box, [rows.start])
    (mask,) = _rows([mask_spec], box, [rows.start])
    (variance,) = _rows([var_spec], box, [rows.start])
    local = slice(rows.start, rows.start + image.shape[0])
    matched = np.asarray(chunk)[0, 0, : image.shape[0], : box.width]
    ref = _ref_rows(box, rows.start, ref_image, ref_mask, ref_var)
    return measure.partial(local, image, mask, np.asarray(variance, dtype=np.float32), matched, ref)


def quality_graph(tract: Tract, cfg: MatchConfig, sol: Solution, matched) -> tuple[Any, Any]:
    """The quality of a match (as :func:`write_graph` measures it) from its
    matched image ``matched``, a Dask array chunked like the collection's
    image: returns the graph and the key of (seam map, figures)."""
    from ._compat import TaskRef

    g = _Graph(tract, "quality", cfg_token(cfg, sol.reference, matched.name))
    grid, bits = _common(tract, cfg)
    leaves = {}
    for key in tract.keys:
        vi, pi = tract.index(key)
        box = tract.boxes[key[1]]
        specs = [tract.blocks(plane, vi, pi) for plane in ("image", "mask", "variance")]
        n = sum(1 for y0 in tract.row_starts if y0 < box.height)
        measure, ref_specs = _measure_of(tract, sol, key, n, bits, grid, cfg)
        for yi in range(n):
            leaves.setdefault(key[0], []).append(
                g.task(g.key("measure", vi, pi, yi), _measure_chunk, box, tract.rows_of(yi), specs[0][yi],
                       specs[1][yi], specs[2][yi], TaskRef((matched.name, vi, pi, yi, 0)), measure,
                       ref_specs[0][yi], ref_specs[1][yi], ref_specs[2][yi]))
    done = _quality_trees(g, tract, grid, cfg, leaves)
    return g.graph(matched), done
