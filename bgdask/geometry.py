"""Tract geometry: the skymap, patch boxes, superpixel and coarse grids.

All coordinates are tract pixel coordinates (origin 0, 0). A :class:`Box` is
half-open: pixels ``x0 <= x < x0 + width``. Arrays are indexed ``[y, x]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from .errors import GeometryError, InputError

__all__ = [
    "Box",
    "SkyMap",
    "infer_skymap",
    "superpixel_shape",
    "superpixel_centers",
    "coarse_shape",
    "coarse_centers",
    "coarse_window",
    "coarse_cells",
    "COARSE_MARGIN",
]

#: Coarse cells kept on each side of a warp's box. Akima and linear
#: interpolation are local (a value depends on at most 3 points each side),
#: so with this margin a warp's offsets equal the tract-wide interpolation and
#: overlapping warps of one visit agree exactly on the pixels they share.
COARSE_MARGIN = 4


@dataclass(frozen=True, order=True)
class Box:
    """A half-open pixel box in tract coordinates."""

    x0: int
    y0: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        return self.x0 + self.width

    @property
    def y1(self) -> int:
        return self.y0 + self.height

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def intersection(self, other: "Box") -> "Box | None":
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0)

    def __str__(self) -> str:
        return f"[{self.x0}:{self.x1}, {self.y0}:{self.y1}] ({self.width} x {self.height})"


#: Bounds of a skymap's numbers (far beyond any real tract; they keep a
#: typo from asking for arrays of petabytes).
MAX_PATCH_PIXELS = 1 << 24
MAX_PATCHES = 1 << 14


@dataclass(frozen=True)
class SkyMap:
    """One tract: ``num_patches`` patches of ``patch_inner`` pixels, outer
    boxes grown by ``patch_border`` and clipped to the tract."""

    patch_inner: tuple[int, int]
    patch_border: int
    num_patches: tuple[int, int]
    tract: int | None = None

    def __post_init__(self):
        px, py = (int(v) for v in self.patch_inner)
        nx, ny = (int(v) for v in self.num_patches)
        b = int(self.patch_border)
        if px <= 0 or py <= 0:
            raise GeometryError(f"skymap: patch_inner must be positive, got {[px, py]}")
        if nx <= 0 or ny <= 0:
            raise GeometryError(f"skymap: num_patches must be positive, got {[nx, ny]}")
        if b < 0:
            raise GeometryError(f"skymap: patch_border must be >= 0, got {b}")
        if max(px, py, b) > MAX_PATCH_PIXELS or max(nx, ny) > MAX_PATCHES:
            raise GeometryError(f"skymap: patch_inner and patch_border must be at most {MAX_PATCH_PIXELS} "
                                f"pixels and num_patches at most {MAX_PATCHES}, got patch_inner {[px, py]}, "
                                f"patch_border {b}, num_patches {[nx, ny]}")
        object.__setattr__(self, "patch_inner", (px, py))
        object.__setattr__(self, "num_patches", (nx, ny))
        object.__setattr__(self, "patch_border", b)
        if self.tract is not None:
            object.__setattr__(self, "tract", int(self.tract))

    # -- tract -------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.num_patches[0] * self.patch_inner[0]

    @property
    def height(self) -> int:
        return self.num_patches[1] * self.patch_inner[1]

    @property
    def box(self) -> Box:
        return Box(0, 0, self.width, self.height)

    @property
    def n_patches(self) -> int:
        return self.num_patches[0] * self.num_patches[1]

    @property
    def patches(self) -> list[int]:
        return list(range(self.n_patches))

    # -- patches -----------------------------------------------------------
    def patch_index(self, patch: int) -> tuple[int, int]:
        """Patch id -> (i, j)."""
        patch = int(patch)
        if not 0 <= patch < self.n_patches:
            raise GeometryError(
                f"patch {patch} is outside the tract's {self.num_patches[0]} x "
                f"{self.num_patches[1]} patches"
            )
        return patch % self.num_patches[0], patch // self.num_patches[0]

    def patch_id(self, i: int, j: int) -> int:
        nx, ny = self.num_patches
        if not (0 <= i < nx and 0 <= j < ny):
            raise GeometryError(f"patch index ({i}, {j}) is outside {nx} x {ny} patches")
        return j * nx + i

    def inner_box(self, patch: int) -> Box:
        i, j = self.patch_index(patch)
        px, py = self.patch_inner
        return Box(i * px, j * py, px, py)

    def outer_box(self, patch: int) -> Box:
        inner = self.inner_box(patch)
        b = self.patch_border
        grown = Box(inner.x0 - b, inner.y0 - b, inner.width + 2 * b, inner.height + 2 * b)
        return grown.intersection(self.box)

    @property
    def max_outer_shape(self) -> tuple[int, int]:
        """(height, width) of the largest outer box: the padded warp shape."""
        shapes = [self.outer_box(p).shape for p in self.patches]
        return max(s[0] for s in shapes), max(s[1] for s in shapes)

    def check_box(self, patch: int, box: Box, where: str = "") -> None:
        """Raise a GeometryError naming ``where`` unless ``box`` is the patch's outer box."""
        expected = self.outer_box(patch)
        if box != expected:
            raise GeometryError(
                f"{where or 'warp'}: box {box} is not patch {patch}'s outer box {expected}"
            )

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_inner"] = list(self.patch_inner)
        d["num_patches"] = list(self.num_patches)
        if d["tract"] is None:
            del d["tract"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "skymap") -> "SkyMap":
        known = {"patch_inner", "patch_border", "num_patches", "tract"}
        unknown = set(d) - known
        if unknown:
            raise GeometryError(f"{source}: unknown skymap field(s) {sorted(unknown)}")
        missing = {"patch_inner", "patch_border", "num_patches"} - set(d)
        if missing:
            raise GeometryError(f"{source}: missing skymap field(s) {sorted(missing)}")
        try:
            inner = d["patch_inner"]
            if isinstance(inner, (int, float)):
                inner = [inner, inner]
            nump = d["num_patches"]
            if isinstance(nump, (int, float)):
                nump = [nump, nump]
            if len(inner) != 2 or len(nump) != 2:
                raise ValueError("patch_inner and num_patches take two numbers [x, y]")
            return cls(
                patch_inner=(int(inner[0]), int(inner[1])),
                patch_border=int(d["patch_border"]),
                num_patches=(int(nump[0]), int(nump[1])),
                tract=d.get("tract"),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise GeometryError(f"{source}: {exc}") from None
        except GeometryError as exc:
            raise GeometryError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SkyMap":
        from ._safeio import load_yaml, read_text

        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: skymap file not found")
        text = read_text(path, "skymap file", error=GeometryError, limit=1 << 20)
        try:
            d = load_yaml(text)
        except yaml.YAMLError as exc:
            raise GeometryError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(d, dict):
            raise GeometryError(f"{path}: a skymap file holds a mapping")
        return cls.from_dict(d, source=str(path))

    def to_flow_yaml(self) -> str:
        """The skymap file's content on one line (valid YAML)."""
        return yaml.safe_dump(self.to_dict(), default_flow_style=True, sort_keys=False, width=1000).strip()

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def __str__(self) -> str:
        t = "" if self.tract is None else f"tract {self.tract}: "
        return (
            f"{t}{self.num_patches[0]} x {self.num_patches[1]} patches of "
            f"{self.patch_inner[0]} x {self.patch_inner[1]} pixels, border "
            f"{self.patch_border}; tract {self.width} x {self.height} pixels"
        )


def infer_skymap(boxes: Mapping[int, Box], tract: int | None = None) -> SkyMap:
    """Infer the skymap from patch ids and their outer boxes.

    Tries every patch count along x that the ids allow and keeps the
    geometries that reproduce every box exactly. Raises a GeometryError when
    none or more than one fits.
    """
    if not boxes:
        raise GeometryError("cannot infer the tract geometry: no warps")
    patches = sorted(int(p) for p in boxes)
    fits: set[SkyMap] = set()
    for nx in range(1, patches[-1] + 2):
        ij = {p: (p % nx, p // nx) for p in patches}
        max_j = max(j for _, j in ij.values())
        for ny in (max_j + 1, max_j + 2):
            sol = _solve_patch_geometry(boxes, ij, nx, ny)
            if sol is not None:
                px, py, b = sol
                sm = SkyMap((px, py), b, (nx, ny), tract)
                if all(sm.outer_box(p) == boxes[p] for p in patches):
                    fits.add(sm)
    if not fits:
        raise GeometryError(f"cannot infer the tract geometry: {_why_no_grid(boxes, patches)}", **_SKYMAP_HINT)
    if len({(s.num_patches[0], s.patch_inner, s.patch_border) for s in fits}) == 1:
        # only the number of patch rows beyond the data is open: take the fewest
        fits = {min(fits, key=lambda s: s.num_patches[1])}
    if len(fits) > 1:
        options = "; ".join(f"{s} (skymap YAML: {s.to_flow_yaml()})" for s in sorted(fits, key=lambda s: s.num_patches))
        raise GeometryError(f"the tract geometry is ambiguous from the warps' boxes: {options}", **_SKYMAP_HINT)
    return fits.pop()


_SKYMAP_HINT = {"api": "pass skymap= (a SkyMap or a skymap YAML file)",
                "cli": "give a skymap file with --skymap FILE"}


def _why_no_grid(boxes: Mapping[int, Box], patches: list[int]) -> str:
    """Why no grid fits: the grid the boxes themselves describe (sizes and
    positions, ids aside) and where the ids disagree with it."""
    grid = _grid_of_boxes(boxes)
    more = "; ..." if len(patches) > 3 else ""
    if grid is None:
        listed = "; ".join(f"patch {p}: {boxes[p]}" for p in patches[:3])
        return f"the warps' boxes fit no regular patch grid ({listed}{more})"
    px, py, b = grid
    size = (px + 2 * b, py + 2 * b)
    facts, cells = [], []
    for p in patches:
        box = boxes[p]
        if (box.width, box.height) == size and (box.x0 + b) % px == 0 and (box.y0 + b) % py == 0:
            i, j = (box.x0 + b) // px, (box.y0 + b) // py
            cells.append((i, j))
            facts.append(f"patch {p}'s box {box} is the patch in column {i}, row {j}")
        else:
            facts.append(f"patch {p}'s box {box} is not a patch of that grid")
    nx = max(i for i, _ in cells) + 1
    ny = max(j for _, j in cells) + 1
    example = SkyMap((px, py), b, (nx, ny))
    return (f"the warps' boxes fit no regular patch grid at their patch ids. Their sizes and positions are "
            f"those of patches of {px} x {py} pixels with a border of {b}: {'; '.join(facts[:3])}{more}. "
            f"A patch id is row * (patches per row) + column: check the ids, or give the tract's geometry in "
            f"a skymap file such as {example.to_flow_yaml()} (num_patches at least as shown)")


def _grid_of_boxes(boxes: Mapping[int, Box]) -> tuple[int, int, int] | None:
    """(Px, Py, b) of the regular grid whose interior outer boxes are the
    most common box size here and fall at every such box's position, ids
    aside; None if there is none. The smallest border that works is taken."""
    from collections import Counter

    (w, h), _ = Counter((bx.width, bx.height) for bx in boxes.values()).most_common(1)[0]
    same = [bx for bx in boxes.values() if (bx.width, bx.height) == (w, h)]
    for b in range(0, min(w, h) // 2):
        px, py = w - 2 * b, h - 2 * b
        if all((bx.x0 + b) % px == 0 and (bx.y0 + b) % py == 0 for bx in same):
            return px, py, b
    return None


def _solve_patch_geometry(boxes, ij, nx, ny, exact: bool = True):
    """Least-squares (Px, Py, b) for the given patch counts, or None (with
    ``exact``, None unless it reproduces every box edge; else the rounded
    least-squares solution when it is a valid geometry)."""
    rows, rhs = [], []
    for p, box in boxes.items():
        i, j = ij[p]
        # unknowns: Px, Py, b
        if i > 0:
            rows.append([i, 0, -1]); rhs.append(box.x0)
        elif box.x0 != 0 and exact:
            return None
        if i < nx - 1:
            rows.append([i + 1, 0, 1]); rhs.append(box.x1)
        else:
            rows.append([nx, 0, 0]); rhs.append(box.x1)
        if j > 0:
            rows.append([0, j, -1]); rhs.append(box.y0)
        elif box.y0 != 0 and exact:
            return None
        if j < ny - 1:
            rows.append([0, j + 1, 1]); rhs.append(box.y1)
        else:
            rows.append([0, ny, 0]); rhs.append(box.y1)
    a = np.array(rows, dtype=float)
    y = np.array(rhs, dtype=float)
    uses_b = bool(np.any(a[:, 2] != 0))
    if not uses_b:
        a = a[:, :2]
    if np.linalg.matrix_rank(a) < a.shape[1]:
        return None
    sol, *_ = np.linalg.lstsq(a, y, rcond=None)
    sol = np.round(sol).astype(int)
    if exact and not np.array_equal(a @ sol, y):
        return None
    px, py = int(sol[0]), int(sol[1])
    b = int(sol[2]) if uses_b else 0
    if px <= 0 or py <= 0 or b < 0:
        return None
    return px, py, b


# -- grids ------------------------------------------------------------------

def superpixel_shape(width: int, height: int, x_bin: int, y_bin: int) -> tuple[int, int]:
    """(ny, nx) of the tract's superpixel grid: floor(H / y_bin), floor(W / x_bin)."""
    return height // y_bin, width // x_bin


def superpixel_centers(n: int, bin_size: int) -> np.ndarray:
    """Tract coordinates of the centres of ``n`` superpixels of ``bin_size``."""
    return (np.arange(n) + 0.5) * bin_size


def coarse_shape(width: int, height: int, binning: int) -> tuple[int, int]:
    """(ny, nx) of the tract-anchored coarse grid of ``binning``-pixel cells."""
    return math.ceil(height / binning), math.ceil(width / binning)


def coarse_centers(start: int, stop: int, binning: int) -> np.ndarray:
    """Tract coordinates of coarse cells ``start <= k < stop``."""
    return (np.arange(start, stop) + 0.5) * binning


def coarse_window(lo: int, size: int, binning: int, n_total: int, margin: int) -> tuple[int, int]:
    """Coarse cells [k0, k1) covering pixels [lo, lo + size) plus ``margin``
    cells on each side, clipped to the tract's ``n_total`` cells."""
    k0 = lo // binning - margin
    k1 = (lo + size - 1) // binning + 1 + margin
    return max(k0, 0), min(k1, n_total)


def coarse_cells(box: Box, binning: int, coarse_shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The coarse cells ``(kx, ky)`` ranges a warp's offsets are built from:
    those covering its box plus :data:`COARSE_MARGIN` cells on each side."""
    kx = coarse_window(box.x0, box.width, binning, coarse_shape[1], COARSE_MARGIN)
    ky = coarse_window(box.y0, box.height, binning, coarse_shape[0], COARSE_MARGIN)
    return kx, ky
