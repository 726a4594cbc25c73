"""A PostgreSQL registry: the same match, the same outputs."""

from __future__ import annotations

from bgdask.cli import main
from butler_env import WHERE, check_outputs


def test_postgres_registry(pg_repo, postgres, file_stores, sims, config_file, cluster, tmp_path, capsys):
    from lsst.daf.butler import Butler

    assert Butler.from_config(pg_repo)._config["registry", "db"].startswith("postgresql+psycopg://postgres@127.0.0.1:")
    out = tmp_path / "pg.zarr"
    code = main(["match", pg_repo, "-o", str(out), "--collections", "warps", "--where", WHERE.format(tract=9813),
                 "--config", str(config_file), "--output-run", "u/test/pg",
                 "--scheduler", cluster.scheduler.address, "--no-progress"])
    assert code == 0, capsys.readouterr().err
    check_outputs(pg_repo, "u/test/pg", file_stores[9813], sims, every=3)
