"""Peak memory of one task of each stage on Rubin-sized warps (4200 x 4200 pixels).

    python docs/measure_task_memory.py

Builds two in-memory warps of patch 4 of a 3 x 3 tract of 4000-pixel patches
with a 100-pixel border, and measures with tracemalloc (NumPy reports its
allocations to it) the peak above the inputs of the functions the pipeline maps:
stage A (one warp's superpixel statistics), stage B (reference - visit on one
patch) and stage C (1024 rows of a matched warp, without and with their
quality sums, bgdask.quality). The first call also compiles
the Numba kernels, so its time is not representative.
"""

import time
import tracemalloc

import numpy as np

from bgdask import background as bg
from bgdask.config import MatchConfig
from bgdask.geometry import SkyMap, coarse_shape, superpixel_shape
from bgdask.kernels.stats import bad_pixels
from bgdask.masks import plane_bits
from bgdask.io.warp import Warp
from bgdask.masks import canonical_planes


def main() -> None:
    sm = SkyMap(patch_inner=(4000, 4000), patch_border=100, num_patches=(3, 3))
    box = sm.outer_box(4)
    cfg = MatchConfig()
    grid = superpixel_shape(sm.width, sm.height, cfg.x_bin, cfg.y_bin)
    planes = canonical_planes([{}])
    rng = np.random.default_rng(0)

    def warp(visit, level):
        img = (level + 5 * rng.standard_normal(box.shape)).astype(np.float32)
        return Warp(img, np.zeros(box.shape, np.int32), np.full(box.shape, 25, np.float32),
                    box.x0, box.y0, dict(planes), visit, 4)

    a, b = warp(1, 100.0), warp(2, 120.0)
    print(f"warp {box.width} x {box.height}: one plane {a.image.nbytes / 1e6:.1f} MB, "
          f"three planes {(a.image.nbytes + a.mask.nbytes + a.variance.nbytes) / 1e6:.1f} MB")

    def peak(label, fn):
        tracemalloc.start()
        t = time.perf_counter()
        out = fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{label}: peak {top / 1e6:.0f} MB above its inputs ({time.perf_counter() - t:.2f} s)")
        return out

    bits = plane_bits(planes, cfg.bad_mask_planes)

    def leaf_a(w):
        return bg.warp_partial((w.visit, 4), w.image, bad_pixels(w.mask, bits, w.image), box, grid, cfg)

    def leaf_b(r, w):
        return bg.difference_partial((r.visit, 4), r.image, bad_pixels(r.mask, bits, r.image), (w.visit, 4),
                                     w.image, bad_pixels(w.mask, bits, w.image), box, grid, cfg)

    peak("stage A warp_partial", lambda: leaf_a(a))
    part = peak("stage B difference_partial", lambda: leaf_b(a, b))
    model, _ = bg.visit_model(part, grid, cfg, 2)
    coarse = bg.warp_coarse(model, box, cfg, coarse_shape(sm.width, sm.height, cfg.binning))
    rows = slice(0, 1024)
    peak("stage C matched_rows, 1024 rows", lambda: bg.matched_rows(b.image[rows], coarse, box, rows, True, cfg))

    # stage C as bgdask match runs it: the matched rows and their quality sums
    # (bgdask.quality), against the reference's rows of the patch (3 more
    # input planes of 1024 rows: 52 MB)
    from bgdask.quality import inner_part, quality_partial

    r, c, part = inner_part(box, sm.inner_box(4), rows)
    noise_cfg = cfg.replace(grid_statistic="MEAN")

    def with_quality():
        # as bgdask.stages._stage_c_warp measures one chunk
        matched = bg.matched_rows(b.image[rows], coarse, box, rows, True, cfg)
        bad = bad_pixels(b.mask[rows], bits, b.image[rows])[r, c]
        ref = (a.image[rows][r, c], bad_pixels(a.mask[rows], bits, a.image[rows])[r, c], a.variance[rows][r, c])
        return quality_partial(matched[r, c], b.image[rows][r, c], bad, b.variance[rows][r, c], ref, part, grid,
                               cfg, noise_cfg)

    peak("stage C matched_rows + quality sums, 1024 rows", with_quality)


if __name__ == "__main__":
    main()
