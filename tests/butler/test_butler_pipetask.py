"""MatchBackgroundsDaskTask: ``pipetask run`` with the shipped pipeline file."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgdask import MatchConfig
from butler_env import CONFIG, WHERE, check_outputs


def pipetask(*args, timeout=600):
    exe = Path(sys.executable).with_name("pipetask")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_pipetask_run_gives_the_same_numbers(rubin_repo, file_stores, sims, cluster):
    """The task's outputs equal the store of the same warps matched from their files."""
    overrides = [a for k, v in CONFIG.items() for a in ("-c", f"matchBackgroundsDask:{k}={v}")]
    out = pipetask(
        "run", "-b", rubin_repo, "-i", "warps", "-o", "u/test/pipetask", "--register-dataset-types",
        "-p", "resource://bgdask.butler/pipelines/MatchBackgroundsDask.yaml",
        "-d", WHERE.format(tract=9813), *overrides,
        "-c", f"matchBackgroundsDask:scheduler_address={cluster.scheduler.address}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Executed 1 quanta successfully" in out.stderr
    check_outputs(rubin_repo, "u/test/pipetask", file_stores[9813], sims, every=3)


def test_the_config_mirrors_match_config():
    from bgdask.butler.task import MatchBackgroundsDaskConfig

    config = MatchBackgroundsDaskConfig()
    for field in dataclasses.fields(MatchConfig):
        value = getattr(config, field.name)
        assert (tuple(value) if field.name == "bad_mask_planes" else value) == field.default, field.name
    assert config.to_match_config() == MatchConfig()
    config.x_bin, config.interpolation, config.bad_mask_planes = 64, "LINEAR", ["BAD", "CR"]
    assert config.to_match_config() == MatchConfig(x_bin=64, interpolation="LINEAR", bad_mask_planes=("BAD", "CR"))
    config.window_scale = 9.0
    with pytest.raises(ValueError, match="window_scale"):
        config.validate()


def test_the_pipeline_file_ships_with_the_package():
    from lsst.pipe.base import Pipeline

    from bgdask.butler import PIPELINE

    graph = Pipeline.from_uri(PIPELINE).to_graph()
    task = graph.tasks["matchBackgroundsDask"]
    assert task.task_class_name == "bgdask.butler.task.MatchBackgroundsDaskTask"
    assert task.raw_dimensions == {"skymap", "tract", "band"}
    warps = task.inputs["warps"]
    assert warps.dataset_type_name == "psf_matched_warp"
    assert {n for n in task.outputs} >= {"matchedImageList", "backgroundInfoList", "matchTable"}
