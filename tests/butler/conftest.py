"""The Butler tests' repositories, built once per session from bgdask's simulator.

* ``rubin_repo``: SQLite, Rubin's layout: ``psf_matched_warp`` as ``ExposureF``
  recorded with obs_base's formatter (a stand-in module during the ingest
  only, so ``butler.get`` cannot read them: bgdask must read their files).
  Runs: ``warps`` (tracts 9813 and 9814), ``warps/mislabeled`` (a file whose
  VISIT card disagrees with its data ID), ``warps/broken`` (a file missing
  from the datastore), ``warps/damaged`` (tract 9814 has a file with
  damaged pixel data).
* ``v2_repo``: SQLite, ``MaskedImageV2`` datasets put with lsst.images.
* ``pg_repo``: a PostgreSQL 15 registry, a private server on 127.0.0.1 in a
  temporary directory (run as ``nobody`` when the tests run as root),
  stopped at the end of the session.

Without the Rubin packages (bgdask[butler], Python >= 3.12) these tests are
skipped with one reason, unless the environment variable CI is set: then
they fail.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


from butler_env import CONFIG, MISSING, SIM_ARGS, file_map  # noqa: E402

if MISSING and not os.environ.get("CI"):
    # only test_extra.py is collected; it skips with butler_env.SKIP_REASON
    collect_ignore_glob = ["test_butler_*.py"]


@pytest.fixture(scope="session")
def sims():
    """Two tracts seen by the same three visits (1000-1002), band r."""
    from bgdask.simulate import make_tract

    return {9813: make_tract(**SIM_ARGS, seed=3, tract=9813),
            9814: make_tract(**SIM_ARGS, seed=4, tract=9814)}


@pytest.fixture(scope="session")
def files(sims, tmp_path_factory):
    """Each tract's warps as afw FITS files: {tract: directory}."""
    from bgdask.simulate import write_tract

    root = tmp_path_factory.mktemp("files")
    return {t: write_tract(sim, root / f"tract{t}") for t, sim in sims.items()}


@pytest.fixture(scope="session")
def config():
    from bgdask import MatchConfig

    return MatchConfig(**CONFIG)


@pytest.fixture(scope="session")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "match.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in CONFIG.items()))
    return path


@pytest.fixture(scope="session")
def cluster():
    """One local Dask cluster for the session (127.0.0.1): one worker process."""
    from bgdask.cluster import ClusterOptions, connect

    with connect(ClusterOptions(workers=1, threads_per_worker=2, dashboard=False)) as client:
        yield client


@pytest.fixture(scope="session")
def file_stores(files, config, cluster, tmp_path_factory):
    """The same warps matched from their files: {tract: store}."""
    import bgdask

    root = tmp_path_factory.mktemp("file_stores")
    out = {}
    for tract, directory in files.items():
        out[tract] = str(root / f"tract{tract}.zarr")
        bgdask.match_backgrounds(directory / "warps", out[tract], config, cluster)
    return out


def _damage(path: Path) -> None:
    """Overwrite the middle of the first compressed HDU's data (headers intact)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        info = hdul.fileinfo(1)
    start, size = info["datLoc"], info["datSpan"]
    with open(path, "r+b") as fh:
        fh.seek(start + size // 4)
        fh.write(b"\xff" * (size // 2))


@pytest.fixture(scope="session")
def rubin_repo(sims, files, tmp_path_factory):
    from bgdask.butler import testing
    from bgdask.io.fits import write_warp
    from bgdask.simulate import warp_filename

    root = tmp_path_factory.mktemp("rubin_repo")
    repo = root / "repo"
    butler = testing.make_repo(repo)
    testing.add_dimensions(butler, sims.values())
    both = {}
    for tract, sim in sims.items():
        both.update(file_map(sim, files[tract]))
    testing.ingest_exposure_warps(butler, both, "warps")
    # a file whose VISIT card says 1001 while its data ID says visit 1000
    sim = sims[9813]
    odd = root / "mislabeled.fits"
    write_warp(odd, dataclasses.replace(sim.warps[(1000, 0)], visit=1001))
    mislabeled = file_map(sim, files[9813])
    mislabeled[(9813, 1000, 0)] = str(odd)
    testing.ingest_exposure_warps(butler, mislabeled, "warps/mislabeled")
    # a dataset whose file is then removed from the datastore
    refs = testing.ingest_exposure_warps(butler, file_map(sim, files[9813]), "warps/broken")
    gone = [r for r in refs if (r.dataId["visit"], r.dataId["patch"]) == (1001, 1)][0]
    os.remove(butler.getURI(gone).ospath)
    # tract 9814 written compressed, one file's pixel data damaged
    damaged = file_map(sim, files[9813])
    assert (1000, 1) in sims[9814].warps
    for (visit, patch), warp in sims[9814].warps.items():
        path = root / "damaged" / warp_filename(visit, patch, compress=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_warp(path, warp, compress=True)
        damaged[(9814, visit, patch)] = str(path)
        if (visit, patch) == (1000, 1):
            _damage(path)
    testing.ingest_exposure_warps(butler, damaged, "warps/damaged")
    return str(repo)


@pytest.fixture(scope="session")
def v2_repo(sims, tmp_path_factory):
    from bgdask.butler import testing

    repo = tmp_path_factory.mktemp("v2_repo") / "repo"
    butler = testing.make_repo(repo)
    testing.add_dimensions(butler, [sims[9813]])
    testing.put_masked_image_warps(butler, sims[9813], "warps")
    return str(repo)


# -- PostgreSQL ------------------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server on 127.0.0.1; yields its registry URL.
    initdb refuses root, so as root the server runs as the user nobody."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL (initdb, pg_ctl) is not installed; run .ci/butler-env"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    base = Path(tempfile.mkdtemp(prefix="bgdask-pg-"))
    os.chmod(base, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = base / "data", _free_port()

    def run(*cmd):
        return subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -F", "start")
    except subprocess.CalledProcessError as exc:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout} {log}")
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE bgdask")
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="bgdask",
                             autocommit=True) as conn:
            conn.execute("CREATE EXTENSION btree_gist")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/bgdask"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_repo(postgres, sims, files, tmp_path_factory):
    from bgdask.butler import testing

    repo = tmp_path_factory.mktemp("pg_repo") / "repo"
    butler = testing.make_repo(repo, db=postgres)
    testing.add_dimensions(butler, [sims[9813]])
    testing.ingest_exposure_warps(butler, file_map(sims[9813], files[9813]), "warps")
    return str(repo)


