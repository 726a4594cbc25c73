import pytest

from bgdask.config import MatchConfig
from bgdask.errors import ConfigError


def test_defaults_are_rubins():
    cfg = MatchConfig()
    assert (cfg.x_bin, cfg.y_bin, cfg.binning) == (128, 128, 64)
    assert cfg.bad_mask_planes == ("BAD", "SAT", "EDGE", "NO_DATA")
    assert cfg.grid_statistic == "MEANCLIP" and cfg.interpolation == "AKIMA_SPLINE"
    assert (cfg.num_sigma_clip, cfg.num_iter, cfg.min_frac) == (3.0, 3, 0.1)
    assert cfg.undersample_style == "REDUCE_INTERP_ORDER"
    assert (cfg.best_ref_weight_chi2, cfg.best_ref_weight_variance,
            cfg.best_ref_weight_global_coverage) == (0.3, 0.3, 0.4)
    assert cfg.extrapolation == "quadratic" and cfg.window_scale == 2.0
    assert cfg.ref_visit is None and cfg.do_smooth is False
    assert cfg.good_pixel_threshold == pytest.approx(0.1 * 128 * 128)


@pytest.mark.parametrize("field, value", [
    ("x_bin", -4), ("y_bin", 0), ("binning", 2.5), ("min_frac", 1.5),
    ("interpolation", "CUBIC"), ("grid_statistic", "MODE"), ("best_ref_weight_chi2", 1.2),
    ("best_ref_weight_variance", -0.1), ("extrapolation", "wild"), ("window_scale", 0),
    ("num_iter", -1), ("undersample_style", "IGNORE"), ("do_smooth", "yes"),
    ("on_no_overlap", "ignore"), ("num_sigma_clip", float("nan")),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        MatchConfig(**{field: value})


def test_names_are_normalised():
    cfg = MatchConfig(interpolation="linear", grid_statistic="mean", bad_mask_planes=["bad", "sat"])
    assert cfg.interpolation == "LINEAR" and cfg.grid_statistic == "MEAN"
    assert cfg.bad_mask_planes == ("BAD", "SAT")


def test_yaml_and_toml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("x_bin: 64\ny_bin: 64\ninterpolation: NATURAL_SPLINE\nref_visit: 12\n")
    cfg = MatchConfig.from_file(y)
    assert (cfg.x_bin, cfg.interpolation, cfg.ref_visit) == (64, "NATURAL_SPLINE", 12)
    t = tmp_path / "c.toml"
    t.write_text('[bgdask]\nbinning = 32\nbad_mask_planes = ["BAD"]\n')
    cfg = MatchConfig.from_file(t)
    assert cfg.binning == 32 and cfg.bad_mask_planes == ("BAD",)


def test_unknown_key_and_bad_file(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("x_bins: 64\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*x_bins"):
        MatchConfig.from_file(y)
    y.write_text("x_bin: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        MatchConfig.from_file(y)
    with pytest.raises(ConfigError, match="not found"):
        MatchConfig.from_file(tmp_path / "missing.yaml")
    y.write_text("x_bin: -3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*x_bin"):
        MatchConfig.from_file(y)


def test_json_round_trip():
    cfg = MatchConfig(x_bin=32, ref_visit=5, bad_mask_planes=("BAD",))
    import json

    assert MatchConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_field_docs_cover_every_field():
    docs = MatchConfig.field_docs()
    assert len(docs) == len(MatchConfig.__dataclass_fields__)
    assert all(doc for _, _, doc in docs)


def test_dask_config_holds_bgdask_defaults():
    import dask

    import bgdask
    from bgdask.simulate import make_tract

    assert dask.config.get("bgdask.chunk-rows") == 1024
    sim = make_tract(n_visits=2, num_patches=(1, 1), patch_inner=300, patch_border=0, seed=1)
    with dask.config.set({"bgdask.chunk-rows": 64}):
        ds = bgdask.open_warps(sim.warps, chunks={"y": dask.config.get("bgdask.chunk-rows")})
        assert ds.image.data.chunks[2] == (64, 64, 64, 64, 44)
        result = bgdask.match(ds, bgdask.MatchConfig(x_bin=32, y_bin=32), scheduler="sync")
        assert result.matched.image.data.chunks[2] == (64, 64, 64, 64, 44)   # stage C follows
