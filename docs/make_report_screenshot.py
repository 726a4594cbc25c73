"""The screenshot of the report's first screen in docs/img/report_summary.png.

    python docs/make_report_screenshot.py [--workdir /tmp/bgdask-screenshot]

A real run: a simulated tract of 24 visits on 3 x 3 patches of 256 pixels
(seed 7) with a sharp 20 nJy step added to one visit's sky (a structure no
smooth model follows: it is flagged), written as afw FITS, matched with
`bgdask match` (2 local workers, default configuration), reported with
`bgdask report`; headless Chromium photographs the page's first 1280 x 800
pixels, saved as a palette PNG small enough to commit.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
WINDOW = (1280, 800)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("Chromium is needed: apt-get install -y chromium")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/bgdask-screenshot")
    args = p.parse_args(argv)

    from PIL import Image

    from bgdask import cli
    from bgdask.simulate import make_tract
    from bgdask.testing import with_step, write_warps

    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    sim = make_tract(n_visits=24, num_patches=(3, 3), patch_inner=256, patch_border=16, seed=7)
    stepped = sim.visits[5]
    manifest = write_warps(with_step(sim, sim.warps, stepped, 20.0), work / "tract")
    sim.skymap.to_yaml(work / "tract" / "skymap.yaml")
    store, page = work / "tract.zarr", work / "report.html"
    rc = cli.main(["match", str(manifest), "-o", str(store), "--skymap", str(work / "tract" / "skymap.yaml"),
                   "--workers", "2", "--no-progress"])
    if rc:
        return rc
    if cli.main(["report", str(store), "-o", str(page)]):
        return 1
    shot = work / "shot.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={work / 'profile'}", f"--screenshot={shot}",
                    f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", page.as_uri()],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    im = Image.open(shot).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT,
                                                  dither=Image.Dither.NONE)
    out = io.BytesIO()
    im.save(out, format="png", optimize=True)
    target = DOCS / "img" / "report_summary.png"
    target.write_bytes(out.getvalue())
    print(f"step added to visit {stepped}; {target}: {len(out.getvalue()) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":  # the match's worker processes re-import this file
    sys.exit(main())
