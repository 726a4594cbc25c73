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
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from . import background as bg
from .collection import REQUIRED_COORDS, REQUIRED_VARIABLES, BlockRead
from .config import MatchConfig
from .errors import ConfigError, InputError
from .geometry import Box, SkyMap, coarse_cells, coarse_shape, infer_skymap, superpixel_shape
from .io.warp import PLANE_DTYPES, PLANE_FILL
from .kernels.stats import bad_pixels
from .masks import plane_bits
from .reference import choose_reference, visit_criteria

__all__ = ["Tract", "Solution", "tract_of", "stage_a", "stage_b", "matched_arrays", "coarse_geometry", "write_graph"]


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
    _specs: dict = field(default_factory=dict, repr=False)

    @property
    def keys(self) -> list[tuple[int, int]]:
        """(visit, patch) of every present warp, visit-major."""
        return [(v, p) for vi, v in enumerate(self.visits) for pi, p in enumerate(self.patches)
                if self.present[vi, pi]]

    def index(self, key: tuple[int, int]) -> tuple[int, int]:
        return self._vidx[key[0]], self._pidx[key[1]]

    def __post_init__(self):
        self._vidx = {v: i for i, v in enumerate(self.visits)}
        self._pidx = {p: i for i, p in enumerate(self.patches)}

    def array(self, plane: str):
        return self.ds[plane].data

    def blocks(self, plane: str, vi: int, pi: int) -> list:
        """The chunks of one warp's plane: :class:`BlockRead` specs where the
        collection's chunk is a read task, else references to the chunk."""
        from ._compat import TaskRef

        arr = self.array(plane)
        layer = arr.__dask_graph__().layers.get(arr.name)
        specs = getattr(layer, "specs", None)
        if specs is not None:
            return list(specs[vi, pi])
        return [TaskRef((arr.name, vi, pi, yi, 0)) for yi in range(len(self.row_starts))]

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


def _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits):
    """A warp's image, its bad pixels (bad mask planes, non-finite image,
    zero or negative variance) and its note: (key, mask bits set without a
    name, pixels of zero or negative variance)."""
    image = _whole(image_blocks, box, y_starts)
    mask, unnamed = _whole_mask(mask_blocks, box, y_starts)
    bad = bad_pixels(mask, bad_bits, image)
    nonpositive = _whole(var_blocks, box, y_starts) <= 0   # NaN variance is not counted
    n = int(np.count_nonzero(nonpositive))
    if n:
        bad |= nonpositive
    return image, bad, (key, unnamed, n)


def _leaf_a(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits, grid, cfg):
    image, bad, _ = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    return bg.warp_partial(key, image, bad, box, grid, cfg)


def _leaf_b(ref_key, ref_image, ref_mask, ref_var, key, image_blocks, mask_blocks, var_blocks, box, y_starts,
            bad_bits, grid, cfg):
    r_image, r_bad, r_note = _image_and_bad(ref_key, ref_image, ref_mask, ref_var, box, y_starts, bad_bits)
    image, bad, note = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    return bg.difference_partial(ref_key, r_image, r_bad, key, image, bad, box, grid, cfg).noted(r_note, note)


def _leaf_count(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits):
    _, bad, note = _image_and_bad(key, image_blocks, mask_blocks, var_blocks, box, y_starts, bad_bits)
    return bg.usable_partial(key, bad).noted(note)


# -- graph building ------------------------------------------------------------------

class _Graph:
    """Tasks of one stage, over the collection's arrays."""

    def __init__(self, tract: Tract, stage: str, extra: str = ""):
        self.tract = tract
        self.name = f"bgdask-{stage}-{tract.token}{extra}"
        self.layer: dict = {}

    def key(self, kind: str, *index) -> tuple:
        return (f"{self.name}-{kind}", *index)

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

    def tree(self, kind: str, index, leaves: list):
        """The root of a fixed binary tree of ``add`` over ``leaves`` (keys):
        pairs (0, 1), (2, 3), ..., an odd last one carried up, level by level."""
        level, items = 0, list(leaves)
        while len(items) > 1:
            paired = []
            for i in range(0, len(items) - 1, 2):
                paired.append(self.task(self.key(kind, *index, level, i // 2), bg.Partial.__add__,
                                        self.ref(items[i]), self.ref(items[i + 1])))
            if len(items) % 2:
                paired.append(items[-1])
            items, level = paired, level + 1
        return items[0]

    def graph(self):
        from dask.highlevelgraph import HighLevelGraph

        deps = [self.tract.array(p) for p in REQUIRED_VARIABLES]
        return HighLevelGraph.from_collections(self.name, self.layer, dependencies=deps)


def _common(tract: Tract, cfg: MatchConfig):
    grid = superpixel_shape(tract.skymap.width, tract.skymap.height, cfg.x_bin, cfg.y_bin)
    return grid, plane_bits(tract.mask_planes, cfg.bad_mask_planes)


def stage_a(tract: Tract, cfg: MatchConfig, executor) -> tuple[int, dict]:
    """The reference visit and every visit's reference-choice criteria and cost."""
    grid, bits = _common(tract, cfg)
    g = _Graph(tract, "a", cfg_token(cfg))
    ys = tract.row_starts
    figs = []
    for v in tract.visits:
        leaves = []
        for key in (k for k in tract.keys if k[0] == v):
            vi, pi = tract.index(key)
            leaves.append(g.task(g.key("warp", vi, pi), _leaf_a, key, *g.planes(vi, pi, *_READ),
                                 tract.boxes[key[1]], ys, bits, grid, cfg))
        if not leaves:
            continue
        total = g.tree("sum", (tract._vidx[v],), leaves)
        figs.append(g.task(g.key("criteria", tract._vidx[v]), visit_criteria, g.ref(total), grid, cfg, v))
    criteria = executor.compute(g.graph(), figs, "stage A: reference choice")
    return choose_reference({c.visit: c for c in criteria}, cfg)


#: The planes stages A and B read: the variance too, since pixels of zero or
#: negative variance are bad (reading it costs stages A and B about a tenth
#: more time: BENCHMARKS.md, "Reliability").
_READ = ("image", "mask", "variance")


def stage_b(tract: Tract, cfg: MatchConfig, ref: int, executor) -> tuple[dict, dict, dict]:
    """Every visit's difference model (the reference's is zero), every
    warp's number of usable pixels, and every warp's notes: (mask bits set
    without a name, pixels of zero or negative variance). Stage B reads
    every warp whole, so these cover them all."""
    grid, bits = _common(tract, cfg)
    g = _Graph(tract, "b", cfg_token(cfg, ref))
    ys = tract.row_starts
    present = set(tract.keys)
    jobs, order, read_refs = [], [], set()
    for v in tract.visits:
        if v == ref:
            continue
        leaves = []
        for key in (k for k in tract.keys if k[0] == v):
            vi, pi = tract.index(key)
            box = tract.boxes[key[1]]
            ref_key = (ref, key[1])
            own = g.planes(vi, pi, *_READ)
            if ref_key in present:
                ri, _ = tract.index(ref_key)
                leaves.append(g.task(g.key("diff", vi, pi), _leaf_b, ref_key, *g.planes(ri, pi, *_READ),
                                     key, *own, box, ys, bits, grid, cfg))
                read_refs.add(ref_key)
            else:
                leaves.append(g.task(g.key("count", vi, pi), _leaf_count, key, *own, box, ys, bits))
        if not leaves:
            continue
        total = g.tree("sum", (tract._vidx[v],), leaves)
        jobs.append(g.task(g.key("model", tract._vidx[v]), bg.visit_model, g.ref(total), grid, cfg, v))
        order.append(v)
    rest = []
    for key in tract.keys:
        if key[0] == ref and key not in read_refs:
            vi, pi = tract.index(key)
            rest.append(g.task(g.key("count", vi, pi), _leaf_count, key, *g.planes(vi, pi, *_READ),
                               tract.boxes[key[1]], ys, bits))
    results = executor.compute(g.graph(), jobs + rest, "stage B: difference models")
    models = {v: model for v, (model, _) in zip(order, results[: len(jobs)])}
    models[ref] = bg.VisitModel.zero(ref, grid, "reference")
    pixels: dict[tuple[int, int], int] = {}
    notes: dict[tuple[int, int], tuple[int, int]] = {}
    for part in [read for _, read in results[: len(jobs)]] + list(results[len(jobs):]):
        pixels.update(part.usable_pixels)
        notes.update((key, (unnamed, n)) for key, unnamed, n in part.notes)
    for v in tract.visits:               # a visit with no warp at all
        models.setdefault(v, bg.VisitModel.zero(v, grid, "empty"))
    return dict(sorted(models.items())), pixels, notes


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
    name, cname = g.name, g.name + "-offset-coarse"
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
        mname = name + "-mask"
        for vi in range(len(tract.visits)):
            for pi in range(len(tract.patches)):
                for yi, spec in enumerate(_retarget(tract.blocks("mask", vi, pi), sol.mask_planes)):
                    if isinstance(spec, BlockRead):
                        g.task((mname, vi, pi, yi, 0), _mask_block, spec)
                    else:
                        g.task((mname, vi, pi, yi, 0), np.asarray, spec)
    graph = g.graph()
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


def _write(store, vi, pi, box, rows, image_spec, mask_spec, var_spec, coarse, apply, cfg, finish):
    """Stage C on one chunk of one warp: the matched rows, its mask and
    variance, written to the store; with ``finish`` also the warp's coarse
    grid and its done flag (a warp of one chunk is one task)."""
    (image,) = _rows([image_spec], box, [rows.start])
    (mask,) = _rows([mask_spec], box, [rows.start])
    (variance,) = _rows([var_spec], box, [rows.start])
    local = slice(rows.start, rows.start + image.shape[0])
    crcs = store.write_rows(vi, pi, rows.start, bg.matched_rows(image, coarse, box, local, apply, cfg), mask,
                            np.asarray(variance, dtype=np.float32))
    if finish:
        store.finish_warp(vi, pi, coarse[0], crcs)
    return crcs


def _retarget(specs: list, layout) -> list:
    """Mask read specs remapping to ``layout`` (the solution's, which may
    have UNNAMED planes the collection's lacks)."""
    if layout is None:
        return specs
    return [dataclasses.replace(s, target=dict(layout))
            if isinstance(s, BlockRead) and s.target is not None and s.target != layout else s for s in specs]


def _mask_block(spec):
    return spec.padded()


def _finish(store, vi, pi, coarse, *written) -> None:
    """Mark a warp done once all its chunks have landed (``written``: each
    block's CRCs, in row order: the warp's checksum)."""
    store.finish_warp(vi, pi, coarse[0], [c for crcs in written for c in crcs])


def write_graph(tract: Tract, cfg: MatchConfig, sol: Solution, store, keys) -> tuple[Any, list]:
    """Tasks writing the matched warps ``keys`` into ``store``; returns the
    graph and one key per warp (done when that warp is done)."""
    g = _Graph(tract, "write", cfg_token(cfg, sol.reference, store.path))
    coarse_keys = _coarse_layer(g, tract, cfg, sol, keys)
    ends = []
    for key in keys:
        vi, pi = tract.index(key)
        box = tract.boxes[key[1]]
        specs = [tract.blocks(plane, vi, pi) for plane in ("image", "mask", "variance")]
        specs[1] = _retarget(specs[1], sol.mask_planes)
        n = sum(1 for y0 in tract.row_starts if y0 < box.height)
        written = []
        for yi in range(n):
            written.append(g.task(g.key("rows", vi, pi, yi), _write, store, vi, pi, box, tract.rows_of(yi),
                                  specs[0][yi], specs[1][yi], specs[2][yi], g.ref(coarse_keys[key]),
                                  sol.matches(key), cfg, n == 1))
        if n == 1:
            ends.append(written[0])
        else:
            ends.append(g.task(g.key("done", vi, pi), _finish, store, vi, pi, g.ref(coarse_keys[key]),
                               *[g.ref(k) for k in written]))
    return g.graph(), ends
