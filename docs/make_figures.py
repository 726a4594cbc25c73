"""Regenerate the figures of docs/how-it-works.md from a demo run.

    python docs/make_figures.py [--workdir /tmp/bgdask-docs]

Runs `bgdask demo` (4 visits, 3 x 3 patches of 400 pixels, seed 0: the same
numbers every time), renders the report figures with bgdask.report, and saves
a few of them under docs/img/ as palette PNGs (small enough to commit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
#: figure name in the report -> file under docs/img/
KEEP = {
    "reference_choice": "reference_choice.png",
    "seams": "seams.png",
    "quality": "quality.png",
    "thumbnails": "thumbnails.png",
    "diff_model_1001": "diff_model_1001.png",
    "mosaic_1001": "mosaic_1001.png",
}


def shrink(png: bytes, scale: float = 0.75, colours: int = 128) -> bytes:
    """A smaller PNG of the same figure: scaled down, palette of ``colours``."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    im = im.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    im.save(out, format="png", optimize=True)
    return out.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="/tmp/bgdask-docs")
    args = p.parse_args(argv)
    from bgdask import cli
    from bgdask.report import render_figures

    work = Path(args.workdir)
    rc = cli.main(["demo", "-o", str(work), "--no-progress", "--workers", "2"])
    if rc:
        return rc
    img = DOCS / "img"
    img.mkdir(exist_ok=True)
    total = 0
    for fig in render_figures(work / "demo.zarr", visits=[1001]):
        if fig.name in KEEP:
            data = shrink(fig.png)
            (img / KEEP[fig.name]).write_bytes(data)
            total += len(data)
            print(f"docs/img/{KEEP[fig.name]}: {len(data) / 1024:.0f} KB")
    print(f"total {total / 1024:.0f} KB")
    return 0


if __name__ == "__main__":  # the demo's worker processes re-import this file
    sys.exit(main())
