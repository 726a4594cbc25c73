"""Bad input to ``bgdask match REPO``: one error line naming it, exit 2, nothing written."""

from __future__ import annotations

import pytest

from bgdask.cli import main
from butler_env import WHERE, butler_state

GOOD = WHERE.format(tract=9813)

CASES = {
    "empty-result": (["--collections", "warps", "--where", GOOD + " AND instrument='SimCam' AND visit=99999"],
                     ["no psf_matched_warp datasets", "visit=99999"]),
    "unknown-collection": (["--collections", "warps,nope", "--where", GOOD], ["no collection 'nope'"]),
    "unknown-dataset-type": (["--collections", "warps", "--where", GOOD, "--dataset-type", "nope_warp"],
                             ["no dataset type 'nope_warp'"]),
    "where-syntax": (["--collections", "warps", "--where", "tract = = 9813"], ["--where 'tract = = 9813'"]),
    "missing-file": (["--collections", "warps/broken", "--where", GOOD],
                     ["visit: 1001", "warps/broken", "is missing from the datastore"]),
    "mislabeled-file": (["--collections", "warps/mislabeled", "--where", GOOD],
                        ["visit: 1000", "warps/mislabeled", "1001", "Butler data ID"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, rubin_repo, config_file, tmp_path, capsys):
    args, expected = CASES[case]
    before = butler_state(rubin_repo)
    out = tmp_path / "out.zarr"
    code = main(["match", rubin_repo, "-o", str(out), "--config", str(config_file),
                 "--output-run", "u/test/bad", "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("bgdask: error: "), err
    for text in expected:
        assert text in err[0]
    assert not out.exists()
    assert butler_state(rubin_repo) == before


def test_several_groups_need_an_output_directory(rubin_repo, tmp_path, capsys):
    before = butler_state(rubin_repo)
    where = "skymap='bgdask_sim' AND tract IN (9813, 9814) AND band='r'"
    assert main(["match", rubin_repo, "-o", str(tmp_path / "o.zarr"), "--collections", "warps", "--where", where,
                 "--output-run", "u/test/bad", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 (skymap, tract, band) groups" in err[0] and "give -o a directory" in err[0]
    assert not (tmp_path / "o.zarr").exists()
    assert butler_state(rubin_repo) == before


def test_a_directory_that_is_no_repo(tmp_path, capsys):
    code = main(["match", str(tmp_path), "-o", str(tmp_path / "o.zarr"), "--collections", "warps", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == f"bgdask: error: {tmp_path}: not a Butler repository (no butler.yaml in this directory)"
    assert not (tmp_path / "o.zarr").exists()


def test_no_collections(rubin_repo, tmp_path, capsys):
    assert main(["match", rubin_repo, "-o", str(tmp_path / "o.zarr"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--collections" in err[0]


def test_output_run_that_is_no_run(rubin_repo, tmp_path, capsys):
    from lsst.daf.butler import Butler, CollectionType

    Butler.from_config(rubin_repo, writeable=True).collections.register("u/test/tagged", CollectionType.TAGGED)
    before = butler_state(rubin_repo)
    assert main(["match", rubin_repo, "-o", str(tmp_path / "o.zarr"), "--collections", "warps", "--where", GOOD,
                 "--output-run", "u/test/tagged", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bgdask: error: --output-run u/test/tagged: the collection exists and is TAGGED, not RUN"]
    assert butler_state(rubin_repo) == before
