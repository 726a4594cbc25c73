"""A MaskedImage written now by the installed lsst.images (bgdask[butler],
Python >= 3.12) reads like the committed one (tests/data/lsst_images)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from test_io_fits import LSST_IMAGES, _check_lsst_images_file


def test_reads_a_fresh_lsst_images_file(tmp_path):
    from lsst.images import fits as lsst_fits

    spec = importlib.util.spec_from_file_location("make_masked_image", LSST_IMAGES / "make_masked_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = Path(tmp_path) / "fresh.fits"
    lsst_fits.write(module.masked_image(), str(path))
    _check_lsst_images_file(path, module.X0, module.Y0, module.HEIGHT, module.WIDTH, module.expected_image)
