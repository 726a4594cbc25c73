"""What the stages know of a collection (bgdask.stages.Tract): one table of
its chunks, and stage graphs that carry only the layers their tasks use."""

from __future__ import annotations

import numpy as np
import pytest

import bgdask
from bgdask._compat import TaskRef
from bgdask.background import VisitModel
from bgdask.collection import REQUIRED_VARIABLES, BlockRead
from bgdask.io.store import Store
from bgdask.stages import Solution, _retarget, graph_a, graph_b, tract_of, write_graph


@pytest.fixture(scope="module")
def lazy(small_tract):
    """The collection in 100-row chunks, read by read tasks."""
    return bgdask.open_warps(small_tract / "manifest.csv", chunks={"y": 100})


def test_the_chunk_table_holds_the_read_specs(lazy):
    tract = tract_of(lazy)
    nv, npch, ny = len(tract.visits), len(tract.patches), len(tract.row_starts)
    assert tract.chunks.shape == (nv, npch, 3, ny) and tract.computed == (False, False, False)
    for k, plane in enumerate(REQUIRED_VARIABLES):
        arr = lazy[plane].data
        specs = arr.__dask_graph__().layers[arr.name].specs
        assert all(tract.chunks[vi, pi, k, yi] is specs[vi, pi, yi] for vi, pi, yi in np.ndindex(specs.shape))
        assert all(isinstance(s, BlockRead) and s.plane == plane for s in tract.chunks[:, :, k].flat)
        assert tract.blocks(plane, 1, 2) == list(specs[1, 2])


def test_a_dataset_held_in_memory_gives_references_to_its_chunks(lazy):
    tract = tract_of(lazy.compute(scheduler="sync"))
    assert tract.computed == (True, True, True)
    for k, plane in enumerate(REQUIRED_VARIABLES):
        arr = tract.array(plane)
        keys = set(arr.__dask_graph__().keys())
        refs = tract.chunks[:, :, k].ravel()
        assert all(isinstance(r, TaskRef) and r.key in keys for r in refs)
        assert len({r.key for r in refs}) == arr.npartitions


def _stage_graphs(tract):
    """Stages A, B and C's graphs (C writing a store it never opens) and their outputs' keys."""
    cfg = bgdask.MatchConfig()
    models = {v: VisitModel.zero(v, (4, 4), "matched") for v in tract.visits}
    sol = Solution(tract.visits[0], models, {})
    a, a_keys = graph_a(tract, cfg)
    b, jobs, rest, _ = graph_b(tract, cfg, tract.visits[0])
    c, ends, quality = write_graph(tract, cfg, sol, Store("/nonexistent.zarr"), tract.keys)
    return [(a, a_keys), (b, jobs + rest), (c, ends + [quality])]


def test_stage_graphs_leave_the_read_layers_out(lazy):
    """The stage tasks read the specs themselves: no read task travels with
    their graphs (dask would not cull the read layers away)."""
    for graph, keys in _stage_graphs(tract_of(lazy)):
        (name,) = graph.layers
        assert name.startswith("bgdask-")
        assert all(n.startswith(name) for n in graph.cull(set(keys)).layers)


def test_stage_graphs_hold_the_chunks_they_take(lazy):
    """A Dataset's computed chunks are dependencies of the stage tasks."""
    tract = tract_of(lazy.compute(scheduler="sync"))
    chunks = {r.key for r in tract.chunks.flat}
    for graph, keys in _stage_graphs(tract):
        stage = next(layer for name, layer in graph.layers.items() if name.startswith("bgdask-"))
        taken = {k for task in stage.values() for k in task.dependencies} & chunks
        assert taken and taken <= set(graph.cull(set(keys)).keys())


def test_retargeting_the_masks_copies_only_what_changes(lazy):
    tract = tract_of(lazy)
    assert _retarget(tract.chunks, None) is tract.chunks
    assert _retarget(tract.chunks, dict(tract.mask_planes)) is tract.chunks
    layout = {**tract.mask_planes, "UNNAMED_30": 30}
    out = _retarget(tract.chunks, layout)
    m = REQUIRED_VARIABLES.index("mask")
    assert all(s.target == layout for s in out[:, :, m].flat if s.target is not None)
    assert all(s.target != layout for s in tract.chunks[:, :, m].flat)          # the tract's own is kept
    others = [k for k in range(3) if k != m]
    assert all(a is b for a, b in zip(out[:, :, others].flat, tract.chunks[:, :, others].flat))
