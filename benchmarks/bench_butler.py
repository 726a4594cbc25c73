"""Warps through a Butler against the same warps read directly from their files.

    python benchmarks/bench_butler.py [--small] [--repeats R] [--workdir DIR]

Needs bgdask[butler] (Python >= 3.12). A simulated tract (default 8 visits
on 4 x 4 patches of 256 pixels; --small: 4 visits on 3 x 3 patches of 200)
is written as afw FITS files and put into two SQLite repositories: Rubin's
layout (ExposureF files, ingested) and lsst.images' (MaskedImageV2, put).
Measured side by side, alternating, R times each (default 5), warm page
cache, medians printed:

* **find**: what the client does before matching. Butler: the query
  (``query_datasets``), the file URIs (``get_many_uris``) and the catalog
  (every file's headers) = ``bgdask.butler.find_warp_groups(...)[0].catalog()``;
  files: ``bgdask.io.catalog.find_warps(directory)`` (directory walk and
  the same headers).
* **read**: all three planes of every warp with bgdask's reader: the
  Butler's (ExposureF) files against the original files; and for the
  MaskedImageV2 datasets, ``butler.get`` (lsst.images' reader) against
  bgdask's reader on the same files.

Prints each time and the ratio Butler / files.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def build(work: Path, small: bool):
    from bgdask.butler import testing
    from bgdask.simulate import make_tract, warp_filename, write_tract

    args = dict(n_visits=4, num_patches=(3, 3), patch_inner=200, patch_border=16) if small else \
        dict(n_visits=8, num_patches=(4, 4), patch_inner=256, patch_border=16)
    tag = "small" if small else "default"
    root = work / f"butler-{tag}"
    sim = make_tract(**args, seed=7, tract=9813)
    files = root / "files"
    if not (root / "done").exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        write_tract(sim, files)
        exposure = testing.make_repo(root / "exposure")
        testing.add_dimensions(exposure, [sim])
        testing.ingest_exposure_warps(
            exposure, {(9813, v, p): str(files / warp_filename(v, p)) for v, p in sim.warps}, "warps")
        v2 = testing.make_repo(root / "v2")
        testing.add_dimensions(v2, [sim])
        testing.put_masked_image_warps(v2, sim, "warps")
        (root / "done").write_text("")
    return sim, root, files


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from lsst.daf.butler import Butler

    from bgdask.butler import find_warp_groups
    from bgdask.io import read_plane
    from bgdask.io import read_warp
    from bgdask.io.catalog import find_warps as find_files

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sim, root, files = build(work, args.small)
    n = len(sim.warps)
    where = "skymap='bgdask_sim' AND tract=9813 AND band='r'"
    common.banner(f"Butler vs files: {n} warps of {len(sim.visits)} visits, "
                  f"{sim.skymap.num_patches[0]} x {sim.skymap.num_patches[1]} patches of "
                  f"{sim.skymap.patch_inner[0]} pixels; {args.repeats} repeats, medians")
    butler_paths = list(find_warp_groups(str(root / "exposure"), "warps", where)[0].paths.values())
    file_paths = sorted(str(p) for p in (files / "warps").rglob("*.fits"))
    v2 = Butler.from_config(str(root / "v2"))
    v2_refs = v2.query_datasets("psf_matched_warp", collections="warps", limit=None)
    v2_paths = [u.primaryURI.ospath for u in v2.get_many_uris(v2_refs).values()]
    assert len(butler_paths) == len(file_paths) == len(v2_refs) == n

    def read_all(paths):
        for path in paths:
            for plane in ("image", "mask", "variance"):
                read_plane(path, plane)

    exposure = Butler.from_config(str(root / "exposure"))

    def query_only():
        refs = exposure.query_datasets("psf_matched_warp", collections="warps", where=where,
                                       with_dimension_records=True, limit=None)
        exposure.get_many_uris(refs)

    cases = {
        "find: Butler query + URIs (no headers)": query_only,
        "find: Butler query + URIs + headers": lambda: find_warp_groups(str(root / "exposure"), "warps",
                                                                         where)[0].catalog(),
        "find: directory walk + headers": lambda: find_files(files / "warps"),
        "read: ExposureF files from the Butler": lambda: read_all(butler_paths),
        "read: the original files": lambda: read_all(file_paths),
        "read: MaskedImageV2 by butler.get": lambda: [v2.get(r) for r in v2_refs],
        "read: MaskedImageV2 files by bgdask": lambda: [read_warp(p) for p in v2_paths],
    }
    for fn in cases.values():       # warm the page cache and the imports
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"{name:<42} {t * 1e3:9.1f} ms  ({t / n * 1e3:6.2f} ms per warp)")
    names = list(cases)
    print("ratios (Butler / files):")
    print(f"  find (query, URIs, headers / directory, headers): {med[names[1]] / med[names[2]]:.2f}"
          f"   (the query and URIs alone: {med[names[0]] / med[names[2]]:.2f} of the directory find)")
    print(f"  read ExposureF pixels (Butler's files / original): {med[names[3]] / med[names[4]]:.2f}")
    print(f"  read MaskedImageV2 (butler.get / bgdask's reader): {med[names[5]] / med[names[6]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
