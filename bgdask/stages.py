"""The three stages of a match, as Dask graphs built from the (visit, patch) collection.

* **Stage A** (only without a reference visit): per warp, superpixel sums;
  per visit, a fixed binary tree of sums and the reference-choice criteria.
* **Stage B**: per patch, the superpixel sums of ref - visit; per visit, a
  tree of sums and the difference model; every warp's usable pixel count.
* **Stage C**: per chunk, image + offset. :func:`matched_image` makes it a
  lazy Dask array (the ``matched`` Dataset of :func:`bgdask.match`);
  :func:`write_graph` makes it the tasks that write a store: one task per
  warp (one per group of consecutive warps of a visit for tiny warps) writes
  its rows chunk after chunk, then its coarse grid and its ``done`` flag.

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
from ._compat import DataNode, List, Task, TaskRef
from .collection import REQUIRED_COORDS, REQUIRED_VARIABLES, BlockRead
from .config import MatchConfig
from .errors import InputError
from .geometry import Box, SkyMap, coarse_cells, coarse_shape, infer_skymap, superpixel_shape
from .io.warp import PLANE_DTYPES, PLANE_FILL
from .kernels.stats import bad_pixels, nonpositive_variance
from .masks import bad_bits_of, plane_bits, unnamed_bits
from .quality import QualityPartial, Spread, inner_part, quality_partial, seam_map, visit_levels, visit_quality
from .reference import choose_reference, visit_criteria

__all__ = ["Tract", "Solution", "tract_of", "stage_a", "stage_b", "matched_arrays", "coarse_geometry", "write_graph",
           "quality_graph"]


# -- what the stages know of a Dataset ------------------------------------------

@dataclass
class Tract:
    """A Dataset of warps, decoded once: index, boxes, geometry, mask layout,
    and each chunk of each plane as a read spec or a graph key (:attr:`chunks`)."""

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
        self.keys_of = {v: [] for v in self.visits}
        for k in self.keys:
            self.keys_of[k[0]].append(k)
        self._keyset = set(self.keys)
        #: each patch's inner box
        self.inner_boxes = {p: self.skymap.inner_box(p) for p in self.patches}
        self._arrays = {plane: self.ds[plane].data for plane in REQUIRED_VARIABLES}
        specs = {plane: getattr(arr.__dask_graph__().layers.get(arr.name), "specs", None)
                 for plane, arr in self._arrays.items()}
        #: per plane (REQUIRED_VARIABLES order), whether its chunks are computed
        #: chunks of the Dataset (references), not read specs
        self.computed = tuple(specs[plane] is None for plane in REQUIRED_VARIABLES)
        #: every chunk of every warp, ``chunks[vi, pi, plane, yi]`` (planes in
        #: REQUIRED_VARIABLES order), one object array for the whole tract: the
        #: :class:`BlockRead` spec where the collection's chunk is a read task,
        #: else a reference to the chunk
        self.chunks = np.stack([self._refs(plane) if specs[plane] is None else specs[plane]
                                for plane in REQUIRED_VARIABLES], axis=2)

    def _refs(self, plane: str) -> np.ndarray:
        """References to every chunk of a plane, ``[vi, pi, yi]``."""
        name = self._arrays[plane].name
        out = np.empty((len(self.visits), len(self.patches), len(self.row_starts)), dtype=object)
        for vi, pi, yi in np.ndindex(out.shape):
            out[vi, pi, yi] = TaskRef((name, vi, pi, yi, 0))
        return out

    def index(self, key: tuple[int, int]) -> tuple[int, int]:
        return self._vidx[key[0]], self._pidx[key[1]]

    def array(self, plane: str):
        return self._arrays[plane]

    def blocks(self, plane: str, vi: int, pi: int) -> list:
        """The chunks of one warp's plane (a row of :attr:`chunks`)."""
        return self.chunks[vi, pi, REQUIRED_VARIABLES.index(plane)].tolist()

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

@dataclass(frozen=True)
class BadBits:
    """The mask planes that exclude a pixel: their names and their bits in
    the collection's layout. A mask read straight from its source (not
    remapped into the collection's layout) is tested with its own bits
    (:func:`bgdask.masks.bad_bits_of`: the same pixels)."""

    names: tuple[str, ...]
    target: int

    def of(self, spec) -> int:
        """The bits of a read spec's raw mask."""
        if spec.target is None:
            return self.target
        return bad_bits_of(spec.source.mask_planes, spec.target, self.names)


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


def _one_source(blocks) -> BlockRead | None:
    """The first chunk's read spec when every chunk is read from one source."""
    first = blocks[0] if len(blocks) else None
    if not isinstance(first, BlockRead) or first.source is None:
        return None
    if all(isinstance(b, BlockRead) and b.source is first.source for b in blocks):
        return first
    return None


def _whole(blocks, box: Box, y_starts) -> np.ndarray:
    """A whole plane of the warp: one read where its chunks are read specs."""
    spec = _one_source(blocks)
    if spec is not None:
        return replace(spec, start=0, stop=box.height).rows()
    parts = _rows(blocks, box, y_starts)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _raw_bad(spec: BlockRead, start: int, stop: int, bits: BadBits, image, variance,
             notes: bool = True) -> tuple[np.ndarray, int]:
    """The bad pixels of rows [start, stop) from the source's own mask (no
    remapping), and (with ``notes``, when the spec remaps; 0 otherwise) the
    bits that mask sets without naming them."""
    raw = np.asarray(spec.source.read("mask", slice(start, stop))).astype(np.int32, copy=False)
    unnamed = unnamed_bits(raw, spec.source.mask_planes) if notes and spec.target is not None else 0
    return bad_pixels(raw, bits.of(spec), image, variance), unnamed


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


def _planes_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bits: BadBits, notes: bool = True):
    """A warp's image and variance, its bad pixels (:func:`~bgdask.kernels.stats.bad_pixels`:
    bad mask planes, non-finite image, zero or negative variance) and its
    note: (key, mask bits set without a name, pixels of zero or negative
    variance); None without ``notes`` (the tasks whose warps another task
    notes: stage A, the global method's pairs)."""
    image = _whole(image_blocks, box, y_starts)
    variance = _whole(var_blocks, box, y_starts)
    spec = _one_source(mask_blocks)
    if spec is not None:
        bad, unnamed = _raw_bad(spec, 0, box.height, bits, image, variance, notes)
    else:
        mask, unnamed = _whole_mask(mask_blocks, box, y_starts)
        bad = bad_pixels(mask, bits.target, image, variance)
    return image, variance, bad, (key, unnamed, nonpositive_variance(variance)) if notes else None


def _image_and_bad(*args, notes: bool = True):
    """:func:`_planes_and_bad` without the variance: (image, bad, note)."""
    image, _, bad, note = _planes_and_bad(*args, notes=notes)
    return image, bad, note


def _leaf_a(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits, grid, cfg):
    image, bad, _ = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits,
                                   notes=False)
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
        self.layer[key] = Task(key, fn, *args)
        return key

    def data(self, key, value):
        self.layer[key] = DataNode(key, value)
        return key

    def ref(self, key):
        return TaskRef(key)

    def seq(self, items: list):
        """A list argument (its references resolved when the task runs)."""
        return List(*items) if any(isinstance(i, TaskRef) for i in items) else list(items)

    def planes(self, vi: int, pi: int, rows: int | None = None, chunks: np.ndarray | None = None):
        """A warp's image, mask and variance chunks (its first ``rows`` of
        them), three list arguments (from ``chunks``, default
        :attr:`Tract.chunks`): read specs, or references resolved when the
        task runs. Lists, not arrays: they pickle faster. A task reading
        pixels for a statistic reads all three: pixels of zero or negative
        variance are bad."""
        table = (self.tract.chunks if chunks is None else chunks)[vi, pi, :, :rows].tolist()
        if not any(self.tract.computed):
            return table
        return [List(*row) if ref else row for row, ref in zip(table, self.tract.computed)]

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
        """The stage's graph: its layer over the collection's planes whose
        chunks its tasks take as references (and ``extra`` collections). The
        read layers stay out: tasks read the same rows themselves, and a
        layer no task refers to would travel to the scheduler whole (dask
        does not cull a layer after one whose tasks need nothing outside it)."""
        from dask.highlevelgraph import HighLevelGraph

        deps = [self.tract.array(p) for p, ref in zip(REQUIRED_VARIABLES, self.tract.computed) if ref]
        deps += list(extra)
        return HighLevelGraph.from_collections(self.name, self.layer, dependencies=deps)


def _common(tract: Tract, cfg: MatchConfig) -> tuple[tuple[int, int], BadBits]:
    grid = superpixel_shape(tract.skymap.width, tract.skymap.height, cfg.x_bin, cfg.y_bin)
    names = tuple(cfg.bad_mask_planes)
    return grid, BadBits(names, plane_bits(tract.mask_planes, names))


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
    size = group_size(_leaf_ms(tract, *_A_COST))
    for v in tract.visits:
        calls = []
        for key in tract.keys_of[v]:
            vi, pi = tract.index(key)
            calls.append((("warp", vi, pi), _leaf_a, (key, *g.planes(vi, pi), tract.boxes[key[1]],
                                                    ys, bits, grid, cfg)))
        if not calls:
            continue
        leaves = _leaves(g, tract._vidx[v], calls, size)
        total = g.tree("sum", (tract._vidx[v],), leaves)
        figs.append(g.task(g.key("criteria", tract._vidx[v]), visit_criteria, g.ref(total), grid, cfg, v))
    return g.graph(), figs


#: Rough costs of a stage-A and a stage-B leaf (ns per pixel of the largest
#: warp, fixed ms): only to group tiny warps, several to a task.
_A_COST, _B_COST = (30.0, 1.5), (50.0, 4.0)


def _leaves(g: _Graph, vi: int, calls: list, size: int) -> list:
    """The leaves of visit ``vi``'s sum tree: one task per call ((kind, *index),
    function, arguments) or, with ``size`` > 1, one per aligned group of
    ``size`` consecutive calls, which sums its calls' partials in the same
    fixed tree (an aligned group of 2^k leaves is a subtree of the visit's
    tree, so the totals are bitwise the same)."""
    if size == 1:
        return [g.task(g.key(*name), fn, *args) for name, fn, args in calls]
    out = []
    for gi, idx in enumerate(aligned_groups(len(calls), size)):
        group = [calls[i] for i in idx]
        out.append(g.task(g.key("leaves", vi, gi), _group_of_leaves, tuple(fn for _, fn, _ in group),
                          tuple(len(args) for _, _, args in group), *[a for _, _, args in group for a in args]))
    return out


def _group_of_leaves(fns, counts, *args) -> "bg.Partial":
    """Several leaves in one task: ``fns[i]`` on its ``counts[i]`` arguments,
    the partials summed in the fixed tree."""
    parts, k = [], 0
    for fn, n in zip(fns, counts):
        parts.append(fn(*args[k:k + n]))
        k += n
    return bg.tree_reduce(parts, bg.Partial.__add__)


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
    size = group_size(_leaf_ms(tract, *_B_COST))
    for v in tract.visits:
        if v == ref:
            continue
        calls = []
        for key in tract.keys_of[v]:
            vi, pi = tract.index(key)
            box = tract.boxes[key[1]]
            inner = tract.inner_boxes[key[1]]
            ref_key = (ref, key[1])
            own = g.planes(vi, pi)
            if ref_key in present:
                ri, _ = tract.index(ref_key)
                calls.append((("diff", vi, pi), leaf_b, (ref_key, *g.planes(ri, pi), key, *own, box,
                                                        ys, bits, grid, cfg, inner)))
                read_refs.add(ref_key)
            else:
                calls.append((("count", vi, pi), _leaf_count, (key, *own, box, ys, bits, grid, cfg, inner)))
        if not calls:
            continue
        total = g.tree("sum", (tract._vidx[v],), _leaves(g, tract._vidx[v], calls, size))
        jobs.append(g.task(g.key("model", tract._vidx[v]), bg.visit_model, g.ref(total), grid, cfg, v))
        order.append(v)
    rest = []
    for key in tract.keys:
        if key[0] == ref and key not in read_refs:
            vi, pi = tract.index(key)
            rest.append(g.task(g.key("count", vi, pi), _leaf_count, key, *g.planes(vi, pi),
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
        masks = _retarget(tract.chunks, sol.mask_planes)[:, :, REQUIRED_VARIABLES.index("mask")]
        for vi in range(len(tract.visits)):
            for pi in range(len(tract.patches)):
                for yi, spec in enumerate(masks[vi, pi]):
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


# -- stage C: writing a store, measuring the quality -------------------------------

def group_size(leaf_ms: float, target_ms: float = 50.0, most: int = 256) -> int:
    """Warps per stage-C task: the smallest power of two whose work
    (``leaf_ms`` each) reaches ``target_ms``, at most ``most``; 1 for large
    warps. Only the tasks change: the quality sums are added per visit in one
    fixed tree over all its chunks (:func:`_visit_total`), whatever the groups."""
    size = 1
    while size < most and size * max(leaf_ms, 1e-3) < target_ms:
        size *= 2
    return size


def aligned_groups(n: int, size: int) -> list[range]:
    """Consecutive groups of ``size`` (a power of two) of the indices 0..n-1,
    the first at 0 (the last may be shorter)."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _leaf_ms(tract: Tract, ns_per_pixel: float, fixed_ms: float) -> float:
    """A rough cost of one leaf task on the tract's largest warp (only sets
    how many leaves a task computes)."""
    pixels = max((b.width * b.height for b in tract.boxes.values()), default=0)
    return fixed_ms + pixels * ns_per_pixel * 1e-6


def _chunk(spec, box: Box, start: int) -> np.ndarray:
    """One chunk's rows of a warp, unpadded (a read spec, or a computed chunk)."""
    if isinstance(spec, BlockRead):
        return spec.rows()
    return np.asarray(spec)[0, 0, : box.height - start, : box.width]


@dataclass(frozen=True)
class _WarpC:
    """One warp as a stage-C task sees it (plain data; its chunks travel
    beside it as the task's arguments): where it goes in the store, what is
    done with it, how its quality is measured.

    ``mode``: ``write`` (match it, write it, set its done flag), ``stored``
    (a resumed run: measure the rows already written) or ``given`` (measure
    matched chunks computed elsewhere). ``has_ref``: the reference's chunks
    on the patch follow its own (the quality's residual)."""

    vi: int
    pi: int
    box: Box
    inner: Box
    starts: tuple[int, ...]
    mode: str
    apply: bool
    is_ref: bool
    has_ref: bool

    @property
    def n_lists(self) -> int:
        return 3 + 3 * self.has_ref + (self.mode == "given")


def _warp_c(g: _Graph, sol: Solution, key, mode: str, quality: bool, chunks: np.ndarray,
            matched_name: str | None = None):
    """The :class:`_WarpC` of a warp and its chunk lists, as task arguments:
    own image, mask (from ``chunks``, the tract's in the solution's mask
    layout), variance; the reference's when measured against it; the matched
    chunks in mode ``given``."""
    tract = g.tract
    vi, pi = tract.index(key)
    box = tract.boxes[key[1]]
    n = sum(1 for y0 in tract.row_starts if y0 < box.height)
    ref_key = (sol.reference, key[1])
    has_ref = quality and key[0] != sol.reference and ref_key in tract._keyset
    meta = _WarpC(vi, pi, box, tract.inner_boxes[key[1]], tuple(tract.row_starts[:n]), mode,
                  sol.matches(key), key[0] == sol.reference, has_ref)
    lists = [*g.planes(vi, pi, n, chunks)]
    if has_ref:
        lists.extend(g.planes(tract.index(ref_key)[0], pi, n))
    if mode == "given":
        lists.append(List(*[TaskRef((matched_name, vi, pi, yi, 0)) for yi in range(n)]))
    return meta, lists


def _ref_block(specs, yi: int, box: Box, start: int, bits: BadBits):
    """The reference's image, bad pixels and variance on one chunk's rows."""
    image = _chunk(specs[0][yi], box, start)
    variance = np.asarray(_chunk(specs[2][yi], box, start), dtype=np.float32)
    mask = specs[1][yi]
    if isinstance(mask, BlockRead) and mask.source is not None:
        bad, _ = _raw_bad(mask, start, start + image.shape[0], bits, image, variance, notes=False)
    else:
        bad = bad_pixels(_chunk(mask, box, start), bits.target, image, variance)
    return image, bad, variance


def _stage_c_warp(store, model, cfg: MatchConfig, cshape, grid, bits: BadBits, quality: bool, meta: _WarpC,
                  lists) -> list:
    """Stage C on one warp, one chunk after another (one chunk in memory at a
    time): with mode ``write``, its coarse grid, its matched rows, mask and
    variance written, then its coarse grid and done flag; with ``quality``,
    its chunks' quality sums, in row order (an empty list without)."""
    box = meta.box
    coarse = offsets = None
    if meta.mode == "write":
        coarse = bg.warp_coarse(model, box, cfg, cshape)
        if meta.apply:
            offsets = bg.warp_offsets(coarse[0], coarse[2], coarse[1], box, cfg)
    ref_specs = lists[3:6] if meta.has_ref else None
    parts, crcs = [], []
    for yi, start in enumerate(meta.starts):
        image = _chunk(lists[0][yi], box, start)
        local = slice(start, start + image.shape[0])
        mask = _chunk(lists[1][yi], box, start)
        variance = np.asarray(_chunk(lists[2][yi], box, start), dtype=np.float32)
        if meta.mode == "write":
            matched = bg.matched_rows(image, coarse, box, local, meta.apply, cfg, offsets)
            crcs += store.write_rows(meta.vi, meta.pi, start, matched, mask, variance)
        elif meta.mode == "stored":
            matched = store.read_rows(meta.vi, meta.pi, "image", local, box.width)
        else:
            matched = _chunk(lists[-1][yi], box, start)
        if not quality:
            continue
        cut = inner_part(box, meta.inner, local)
        if cut is None:
            parts.append(QualityPartial())
            continue
        r, c, part = cut
        img = image[r, c]
        bad = bad_pixels(mask, bits.target, image, variance)[r, c]      # one pass over the chunk
        ref = None
        if meta.has_ref:
            r_img, r_bad, r_var = _ref_block(ref_specs, yi, box, start, bits)
            ref = (r_img[r, c], r_bad[r, c], r_var[r, c])
        parts.append(quality_partial(matched[r, c], None if meta.is_ref else img, bad, variance[r, c], ref, part,
                                     grid, cfg))
    if meta.mode == "write":
        store.finish_warp(meta.vi, meta.pi, coarse[0], crcs)
    return parts


def _stage_c(store, model, cfg: MatchConfig, cshape, grid, bits: BadBits, quality: bool, metas, *lists) -> list:
    """Stage C on a group of consecutive warps of one visit (:func:`_stage_c_warp`
    each); with ``quality``, the quality sums of their chunks in warp, then
    row order (added up per visit by :func:`_visit_total`)."""
    parts, k = [], 0
    for meta in metas:
        parts += _stage_c_warp(store, model, cfg, cshape, grid, bits, quality, meta, lists[k:k + meta.n_lists])
        k += meta.n_lists
    return parts


def _visit_total(*groups) -> QualityPartial:
    """A visit's quality sums: the fixed tree over all its chunks' sums (in
    warp, then row order), whichever tasks measured them."""
    return bg.tree_reduce([p for parts in groups for p in parts], QualityPartial.__add__)


def _retarget(chunks: np.ndarray, layout) -> np.ndarray:
    """A table of chunks like :attr:`Tract.chunks` whose mask read specs remap
    to ``layout`` (the solution's, which may have UNNAMED planes the
    collection's lacks); ``chunks`` itself when no spec changes."""
    if layout is None:
        return chunks
    m = REQUIRED_VARIABLES.index("mask")
    changed = [(i, s) for i, s in np.ndenumerate(chunks[:, :, m])
               if isinstance(s, BlockRead) and s.target is not None and s.target != layout]
    if not changed:
        return chunks
    out, target = chunks.copy(), dict(layout)
    for (vi, pi, yi), s in changed:
        out[vi, pi, m, yi] = dataclasses.replace(s, target=target)
    return out


def _mask_block(spec):
    return spec.padded()


def _collect(seam, *figures):
    return seam, list(figures)


#: Rough costs of a stage-C warp (only to group tiny warps into one task).
_C_NS_PER_PIXEL, _C_FIXED_MS = 120.0, 4.0


def _stage_c_graph(g: _Graph, tract: Tract, cfg: MatchConfig, sol: Solution, modes: dict, quality: bool,
                   store=None, matched_name: str | None = None) -> tuple[list, dict]:
    """Per visit, tasks over aligned groups of its warps (``modes``: warp ->
    mode, visit-major order); returns the tasks with a warp to write and,
    per visit, its tasks' keys in order (the leaves of its quality tree)."""
    grid, bits = _common(tract, cfg)
    cshape = coarse_shape(tract.skymap.width, tract.skymap.height, cfg.binning)
    size = group_size(_leaf_ms(tract, _C_NS_PER_PIXEL, _C_FIXED_MS))
    chunks = _retarget(tract.chunks, sol.mask_planes)
    ends, leaves = [], {}
    for v in tract.visits:
        keys = [k for k in tract.keys_of[v] if k in modes]
        if not keys:
            continue
        vi = tract._vidx[v]
        writes = any(modes[k] == "write" for k in keys)
        model = g.ref(g.data(g.key("model", vi), sol.models[v])) if writes else None
        for gi, idx in enumerate(aligned_groups(len(keys), size)):
            metas, lists = [], []
            for i in idx:
                meta, ls = _warp_c(g, sol, keys[i], modes[keys[i]], quality, chunks, matched_name)
                metas.append(meta)
                lists.extend(ls)
            key = g.task(g.key("warps", vi, gi), _stage_c, store, model, cfg, cshape, grid, bits, quality,
                         tuple(metas), *lists)
            leaves.setdefault(v, []).append(key)
            if any(m.mode == "write" for m in metas):
                ends.append(key)
    return ends, leaves


def write_graph(tract: Tract, cfg: MatchConfig, sol: Solution, store, keys, *,
                quality: bool = True) -> tuple[Any, list, Any]:
    """Tasks writing the matched warps ``keys`` into ``store``; returns the
    graph, the keys of the tasks that write (each done when its warps are
    done), and the key of the match's quality (None with ``quality=False``).

    One task per warp (one chunk after another) or, for tiny warps, per
    aligned group of consecutive warps of a visit. The quality
    (:mod:`bgdask.quality`) is measured by the same tasks, on the rows they
    write (and on the reference's rows of the same patch); warps already done
    (a resumed run) are measured from the store. Its key holds (the seam map,
    a :class:`~bgdask.quality.VisitQuality` per visit with warps); per visit a
    fixed tree adds the warps' sums (each the fixed tree over its chunks),
    and a fixed tree over the visits combines their levels."""
    g = _Graph(tract, "write", cfg_token(cfg, sol.reference, store.path, quality))
    todo = set(keys)
    modes = {k: ("write" if k in todo else "stored") for k in tract.keys if quality or k in todo}
    ends, leaves = _stage_c_graph(g, tract, cfg, sol, modes, quality, store)
    if not quality:
        return g.graph(), ends, None
    grid, _ = _common(tract, cfg)
    return g.graph(), ends, _quality_trees(g, tract, grid, cfg, leaves)


def _quality_trees(g: _Graph, tract: Tract, grid, cfg: MatchConfig, leaves: dict) -> tuple:
    """Per visit a tree over its tasks' quality sums (``leaves``: visit ->
    keys in warp order), its figures and levels; a tree over the visits'
    levels; the key of (seam map, figures)."""
    figures, levels = [], []
    for v, blocks in leaves.items():
        vi = tract._vidx[v]
        total = g.task(g.key("visit-sums", vi), _visit_total, *[g.ref(k) for k in blocks])
        figures.append(g.task(g.key("visit-quality", vi), visit_quality, g.ref(total), grid, cfg, v))
        levels.append(g.task(g.key("levels", vi), visit_levels, g.ref(total), grid, cfg))
    spread = g.tree("spread", (), levels, Spread.__add__)
    seam = g.task(g.key("seam"), seam_map, g.ref(spread))
    return g.task(g.key("quality"), _collect, g.ref(seam), *[g.ref(k) for k in figures])


def quality_graph(tract: Tract, cfg: MatchConfig, sol: Solution, matched) -> tuple[Any, Any]:
    """The quality of a match (as :func:`write_graph` measures it) from its
    matched image ``matched``, a Dask array chunked like the collection's
    image: returns the graph and the key of (seam map, figures)."""
    g = _Graph(tract, "quality", cfg_token(cfg, sol.reference, matched.name))
    grid, _ = _common(tract, cfg)
    modes = {k: "given" for k in tract.keys}
    _, leaves = _stage_c_graph(g, tract, cfg, sol, modes, True, matched_name=matched.name)
    done = _quality_trees(g, tract, grid, cfg, leaves)
    return g.graph(matched), done
