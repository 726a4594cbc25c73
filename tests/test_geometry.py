import numpy as np
import pytest

from bgdask.errors import GeometryError
from bgdask.geometry import (Box, SkyMap, coarse_shape, coarse_window, infer_skymap,
                             superpixel_centers, superpixel_shape)


@pytest.fixture
def sm():
    return SkyMap(patch_inner=(400, 300), patch_border=20, num_patches=(3, 2), tract=7)


def test_patch_ids_and_boxes(sm):
    assert sm.width == 1200 and sm.height == 600 and sm.n_patches == 6
    assert sm.patch_index(4) == (1, 1) and sm.patch_id(1, 1) == 4
    assert sm.inner_box(4) == Box(400, 300, 400, 300)
    assert sm.outer_box(4) == Box(380, 280, 440, 320)   # top edge clipped
    assert sm.outer_box(0) == Box(0, 0, 420, 320)       # corner: clipped on two sides
    assert sm.outer_box(2) == Box(780, 0, 420, 320)
    assert sm.max_outer_shape == (320, 440)
    with pytest.raises(GeometryError, match="patch 6"):
        sm.outer_box(6)


def test_check_box_names_the_file(sm):
    sm.check_box(1, Box(380, 0, 440, 320))
    with pytest.raises(GeometryError, match="w.fits.*patch 1"):
        sm.check_box(1, Box(0, 0, 440, 320), where="w.fits")


def test_yaml_round_trip(sm, tmp_path):
    sm.to_yaml(tmp_path / "s.yaml")
    assert SkyMap.from_yaml(tmp_path / "s.yaml") == sm
    (tmp_path / "bad.yaml").write_text("patch_inner: [1, 1]\npatch_border: 0\n")
    with pytest.raises(GeometryError, match="num_patches"):
        SkyMap.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("patch_inner: 4\npatch_border: 0\nnum_patches: 2\nwhat: 1\n")
    with pytest.raises(GeometryError, match="what"):
        SkyMap.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.parametrize("inner, border, nump", [((400, 400), 20, (3, 3)), ((256, 128), 16, (4, 2)),
                                                  ((100, 100), 0, (2, 3)), ((64, 64), 8, (1, 3))])
def test_infer_recovers_the_skymap(inner, border, nump):
    sm = SkyMap(inner, border, nump)
    assert infer_skymap({p: sm.outer_box(p) for p in sm.patches}) == sm
    # a subset with both tract edges in x and y still determines it
    keep = [0, sm.n_patches - 1] + ([sm.patch_id(1, 1)] if min(nump) > 2 else [])
    if min(nump) > 1 and border:
        assert infer_skymap({p: sm.outer_box(p) for p in keep}) == sm


def test_infer_fails_clearly():
    with pytest.raises(GeometryError, match="skymap=") as info:
        infer_skymap({0: Box(0, 0, 100, 100), 1: Box(7, 3, 50, 90)})
    assert "--skymap" in info.value.cli_message()
    assert "patch 1's box [7:57, 3:93] (50 x 90) is not a patch of that grid" in str(info.value)
    with pytest.raises(GeometryError, match="no regular patch grid"):
        infer_skymap({0: Box(0, 0, 120, 120), 1: Box(100, 0, 120, 100)})
    # patch 0 alone is read as a one-patch tract
    assert infer_skymap({0: Box(0, 0, 110, 110)}) == SkyMap((110, 110), 0, (1, 1))


def test_grids():
    assert superpixel_shape(1200, 600, 128, 128) == (4, 9)
    np.testing.assert_array_equal(superpixel_centers(3, 128), [64, 192, 320])
    assert coarse_shape(1200, 600, 64) == (10, 19)
    assert coarse_window(380, 440, 64, 19, 4) == (1, 17)
    assert coarse_window(0, 420, 64, 19, 4) == (0, 11)
    assert coarse_window(780, 420, 64, 19, 4) == (8, 19)
