"""MatchConfig: the fields of the method (docs/algorithm.md), validated, loadable from YAML or TOML."""

from __future__ import annotations

import dataclasses
import json
import numbers
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._safeio import load_yaml, read_text
from .errors import ConfigError
from .kernels import DEFAULT_SMOOTHNESS, EXTRAPOLATIONS, MAX_PARTNERS, PLACEMENTS, SOLVERS, STATISTICS, STYLES

__all__ = ["MatchConfig", "STATISTICS", "INTERPOLATIONS", "EXTRAPOLATIONS", "METHODS", "setting_flag"]

#: The interpolation styles (owned, like STATISTICS and EXTRAPOLATIONS, by bgdask.kernels).
INTERPOLATIONS = STYLES
UNDERSAMPLE_STYLES = ("REDUCE_INTERP_ORDER", "THROW_EXCEPTION")
NO_OVERLAP_POLICIES = ("raise", "skip")
#: Matching methods: Rubin's (every visit to one reference visit) and the
#: global solve through every overlap (docs/global.md).
METHODS = ("reference", "global")
#: ``placement`` values: where each method's default puts them, or one of PLACEMENTS.
PLACEMENT_CHOICES = ("auto", *PLACEMENTS)
#: The placement ``auto`` means, per method.
DEFAULT_PLACEMENT = {"reference": "centre", "global": "centroid"}

#: The ranges of the numeric fields, checked on construction (documented in
#: docs/configuration.md through the fields' docs): every number must be
#: finite and inside its range before any kernel runs.
MAX_BIN = 1 << 20            # x_bin, y_bin, binning: 1 to 1,048,576 pixels
MAX_NUM_ITER = 100           # num_iter: 0 to 100 clipping iterations
MAX_SIGMA_CLIP = 100.0       # num_sigma_clip: (0, 100]
MAX_SMOOTH_SCALE = 100.0     # smooth_scale: (0, 100] superpixels
MAX_MAX_PARTNERS = 10_000    # max_partners: 1 to 10,000 partner visits
#: bad_mask_planes: at most this many names, each of 1 to MAX_PLANE_NAME
#: characters A-Z, 0-9, '_', '-' (the characters an MP_ card can carry).
MAX_BAD_PLANES = 64
MAX_PLANE_NAME = 64
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _doc(text: str, **kw) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class MatchConfig:
    """Configuration of background matching.

    Field names and defaults follow Rubin's ``MatchBackgroundsConfig`` in
    snake_case; ``extrapolation``, ``window_scale``, ``on_no_overlap``, the
    global method's fields and ``max_match_ratio`` are bgdask's additions.
    Every field is checked on construction; a bad value raises
    :class:`~bgdask.errors.ConfigError` naming the field.
    """

    ref_visit: int | None = _doc("reference visit; chosen by the cost function when None", default=None)
    x_bin: int = _doc("superpixel width in tract pixels, 1 to 1048576", default=128)
    y_bin: int = _doc("superpixel height in tract pixels, 1 to 1048576", default=128)
    min_frac: float = _doc(
        "a superpixel is good only with N >= min_frac * x_bin * y_bin counted pixels", default=0.1
    )
    bad_mask_planes: tuple[str, ...] = _doc(
        "pixels with any of these mask planes are ignored; each a plane some input declares "
        "(up to 64 names of A-Z, 0-9, _ and -)",
        default=("BAD", "SAT", "EDGE", "NO_DATA"),
    )
    grid_statistic: str = _doc("superpixel statistic: MEAN, MEDIAN or MEANCLIP", default="MEANCLIP")
    num_sigma_clip: float = _doc("clipping half-width in standard deviations (MEANCLIP), in (0, 100]", default=3.0)
    num_iter: int = _doc("clipping iterations (MEANCLIP), 0 to 100", default=3)
    interpolation: str = _doc(
        "interpolation style: NONE, CONSTANT, LINEAR, NATURAL_SPLINE, AKIMA_SPLINE",
        default="AKIMA_SPLINE",
    )
    undersample_style: str = _doc(
        "too few points for the style: REDUCE_INTERP_ORDER or THROW_EXCEPTION",
        default="REDUCE_INTERP_ORDER",
    )
    do_smooth: bool = _doc("smooth the binned model with a Gaussian", default=False)
    smooth_scale: float = _doc("Gaussian sigma of the smoothing, in superpixels, in (0, 100]", default=2.0)
    binning: int = _doc("pixel spacing of the coarse per-warp offset grid, 1 to 1048576", default=64)
    best_ref_weight_chi2: float = _doc("reference cost weight of the plane-fit chi2", default=0.3)
    best_ref_weight_variance: float = _doc("reference cost weight of the variance", default=0.3)
    best_ref_weight_global_coverage: float = _doc("reference cost weight of the coverage", default=0.4)
    extrapolation: str = _doc(
        "beyond the last good point: quadratic (Rubin), linear or nearest", default="quadratic"
    )
    window_scale: float = _doc(
        "superpixel window size in bins: 2.0 = Rubin's overlapping windows, 1.0 = disjoint bins",
        default=2.0,
    )
    on_no_overlap: str = _doc(
        "a visit sharing no good superpixel with the reference: raise, or skip it (unmatched)",
        default="raise",
    )
    method: str = _doc(
        "reference: match every visit to the reference visit (Rubin's); global: one least-squares solve "
        "through every pair of overlapping visits, chaining visits to the reference (docs/global.md)",
        default="reference",
    )
    placement: str = _doc(
        "where a superpixel's value sits: centre (Rubin's), centroid (of the pixels it counted), or auto: "
        "centroid for the global method, centre for the reference method",
        default="auto",
    )
    global_smoothness: float = _doc(
        "global method: weight of the thin-plate smoothness prior relative to the median pair weight "
        "(dimensionless, the same physical prior at every bin size)",
        default=DEFAULT_SMOOTHNESS,
    )
    max_partners: int = _doc(
        "global method: most partners a visit keeps (pairs with the reference and those that keep the "
        "visits connected are always kept)",
        default=MAX_PARTNERS,
    )
    solver: str = _doc(
        "global method: sparse solver: auto (CHOLMOD when scikit-sparse is installed, else SuperLU), "
        "cholmod or superlu",
        default="auto",
    )
    max_match_ratio: float = _doc(
        "a visit whose match_ratio (RMS of reference - matched visit over what the variance planes "
        "predict) exceeds this is flagged",
        default=10.0,
    )

    def __post_init__(self):
        s = object.__setattr__
        if self.ref_visit is not None:
            s(self, "ref_visit", _as_int("ref_visit", self.ref_visit))
            if not _INT64[0] <= self.ref_visit <= _INT64[1]:
                raise ConfigError(f"config field 'ref_visit' must be a 64-bit integer, got {self.ref_visit}")
        for name in ("x_bin", "y_bin", "binning", "num_iter"):
            s(self, name, _as_int(name, getattr(self, name)))
        for name in ("x_bin", "y_bin", "binning"):
            if not 1 <= getattr(self, name) <= MAX_BIN:
                raise ConfigError(f"config field {name!r} must be a positive integer up to {MAX_BIN}, "
                                  f"got {getattr(self, name)}")
        if not 0 <= self.num_iter <= MAX_NUM_ITER:
            raise ConfigError(f"config field 'num_iter' must be 0 to {MAX_NUM_ITER}, got {self.num_iter}")
        for name in (
            "min_frac", "num_sigma_clip", "smooth_scale", "window_scale",
            "best_ref_weight_chi2", "best_ref_weight_variance", "best_ref_weight_global_coverage",
            "max_match_ratio",
        ):
            s(self, name, _as_float(name, getattr(self, name)))
        if self.max_match_ratio <= 0:
            raise ConfigError(f"config field 'max_match_ratio' must be > 0, got {self.max_match_ratio}")
        if not 0.0 <= self.min_frac <= 1.0:
            raise ConfigError(f"config field 'min_frac' must be in [0, 1], got {self.min_frac}")
        if not 0 < self.num_sigma_clip <= MAX_SIGMA_CLIP:
            raise ConfigError(f"config field 'num_sigma_clip' must be in (0, {MAX_SIGMA_CLIP:g}], "
                              f"got {self.num_sigma_clip}")
        if not 0 < self.smooth_scale <= MAX_SMOOTH_SCALE:
            raise ConfigError(f"config field 'smooth_scale' must be in (0, {MAX_SMOOTH_SCALE:g}], "
                              f"got {self.smooth_scale}")
        if not 0.0 < self.window_scale <= 4.0:
            raise ConfigError(f"config field 'window_scale' must be in (0, 4], got {self.window_scale}")
        for name in ("best_ref_weight_chi2", "best_ref_weight_variance", "best_ref_weight_global_coverage"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"config field {name!r} must be in [0, 1], got {v}")
        s(self, "grid_statistic", _choice("grid_statistic", self.grid_statistic, STATISTICS, upper=True))
        s(self, "interpolation", _choice("interpolation", self.interpolation, INTERPOLATIONS, upper=True))
        s(self, "undersample_style", _choice("undersample_style", self.undersample_style, UNDERSAMPLE_STYLES, upper=True))
        s(self, "extrapolation", _choice("extrapolation", self.extrapolation, EXTRAPOLATIONS))
        s(self, "on_no_overlap", _choice("on_no_overlap", self.on_no_overlap, NO_OVERLAP_POLICIES))
        s(self, "method", _choice("method", self.method, METHODS))
        s(self, "placement", _choice("placement", self.placement, PLACEMENT_CHOICES))
        s(self, "solver", _choice("solver", self.solver, SOLVERS))
        s(self, "global_smoothness", _as_float("global_smoothness", self.global_smoothness))
        if self.global_smoothness < 0:
            raise ConfigError(f"config field 'global_smoothness' must be >= 0, got {self.global_smoothness}")
        s(self, "max_partners", _as_int("max_partners", self.max_partners))
        if not 1 <= self.max_partners <= MAX_MAX_PARTNERS:
            raise ConfigError(f"config field 'max_partners' must be 1 to {MAX_MAX_PARTNERS}, got {self.max_partners}")
        if not isinstance(self.do_smooth, bool):
            raise ConfigError(f"config field 'do_smooth' must be true or false, got {_short(repr(self.do_smooth))}")
        s(self, "bad_mask_planes", _plane_names(self.bad_mask_planes))

    # -- construction ------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "config") -> "MatchConfig":
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown config field(s) {unknown}; known: {sorted(names)}")
        try:
            return cls(**d)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "MatchConfig":
        """Load a YAML (.yaml/.yml) or TOML (.toml) file. A top-level ``bgdask``
        or ``match`` table, if present, holds the fields."""
        import yaml

        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        # a regular file of at most 1 MiB; YAML without aliases (an alias
        # bomb of a few hundred bytes expands to gigabytes)
        text = read_text(path, "configuration file", error=ConfigError, limit=1 << 20)
        try:
            if path.suffix.lower() == ".toml":
                d = tomllib.loads(text)
            else:
                d = load_yaml(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot parse config ({' '.join(str(exc).split())})") from None
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a config file holds a mapping of fields")
        for key in ("bgdask", "match"):
            if set(d) == {key} and isinstance(d[key], dict):
                d = d[key]
        return cls.from_dict(d, source=str(path))

    def replace(self, **changes) -> "MatchConfig":
        return dataclasses.replace(self, **changes)

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bad_mask_planes"] = list(self.bad_mask_planes)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def good_pixel_threshold(self) -> float:
        """The least N of a good superpixel: min_frac * x_bin * y_bin."""
        return self.min_frac * self.x_bin * self.y_bin

    def check_mask_planes(self, declared, source: str = "the inputs") -> None:
        """Raise a ConfigError unless every ``bad_mask_planes`` name is a plane
        that ``declared`` (the inputs' mask planes) holds."""
        unknown = [n for n in self.bad_mask_planes if n not in declared]
        if unknown:
            raise ConfigError(f"config field 'bad_mask_planes': {', '.join(unknown)} "
                              f"{'is' if len(unknown) == 1 else 'are'} not a mask plane of {source}; "
                              f"known planes: {', '.join(declared)}")

    @property
    def value_placement(self) -> str:
        """Where this run places the superpixel values: ``placement``, with
        ``auto`` resolved by the method (centroid for global, centre for reference)."""
        return DEFAULT_PLACEMENT[self.method] if self.placement == "auto" else self.placement

    @classmethod
    def field_docs(cls) -> list[tuple[str, Any, str]]:
        """(name, default, meaning) of every field, for the docs and --help."""
        return [(f.name, f.default, f.metadata.get("doc", "")) for f in fields(cls)]


_PLANE_NAME = __import__("re").compile(r"[A-Z0-9_-]+")


def _plane_names(planes) -> tuple[str, ...]:
    """bad_mask_planes as a tuple of upper-case names, each short and made of
    the characters an ``MP_`` card can carry (what inputs declare is checked
    later, against the catalog: :func:`MatchConfig.check_mask_planes`)."""
    field_ = "config field 'bad_mask_planes'"
    if isinstance(planes, str):
        planes = [planes]
    if not isinstance(planes, (list, tuple)):
        raise ConfigError(f"{field_} must be a list of mask plane names, got a {type(planes).__name__}")
    if len(planes) > MAX_BAD_PLANES:
        raise ConfigError(f"{field_} lists {len(planes)} names; at most {MAX_BAD_PLANES}")
    out = []
    for p in planes:
        if not isinstance(p, str):
            raise ConfigError(f"{field_} must list names (strings), not a {type(p).__name__}: "
                              f"{_short(repr(p))}")
        name = p.strip().upper()
        if not (0 < len(name) <= MAX_PLANE_NAME and _PLANE_NAME.fullmatch(name)):
            raise ConfigError(f"{field_}: {_short(repr(p))} is not a mask plane name "
                              f"(1 to {MAX_PLANE_NAME} characters A-Z, 0-9, '_', '-')")
        out.append(name)
    return tuple(out)


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _as_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ConfigError(f"config field {name!r} must be an integer, got {_short(repr(v))}")
    if isinstance(v, int):
        return int(v)
    try:
        f = float(v)
    except ValueError:
        raise ConfigError(f"config field {name!r} must be an integer, got {_short(repr(v))}") from None
    if not f.is_integer():
        raise ConfigError(f"config field {name!r} must be an integer, got {_short(repr(v))}")
    return int(f)


def _as_float(name, v):
    if isinstance(v, bool):
        raise ConfigError(f"config field {name!r} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"config field {name!r} must be a number, got {_short(repr(v))}") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise ConfigError(f"config field {name!r} must be finite, got {v!r}")
    return f


def _choice(name, v, choices, upper=False):
    if not isinstance(v, str):
        raise ConfigError(f"config field {name!r} must be one of {list(choices)}, got {_short(repr(v))}")
    vv = v.upper() if upper else v.lower()
    if vv not in choices:
        raise ConfigError(f"config field {name!r} must be one of {list(choices)}, got {_short(repr(v))}")
    return vv


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def setting_flag(name: str, default: bool, error: type[Exception] = ConfigError) -> bool:
    """A true-or-false setting of bgdask's Dask configuration (``bgdask.NAME``,
    bgdask.yaml): a bool or 0 / 1, or a string as an environment variable
    may leave it (Dask turns ``true`` and ``false`` into bools, but keeps
    ``off``, ``no`` or ``yes`` strings, which are all truthy). An empty value
    (None in YAML, an empty string in the environment) is the default;
    anything else raises ``error`` naming the setting."""
    import dask.config

    value = dask.config.get(f"bgdask.{name}", default)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, (bool, np.bool_, numbers.Real)) and value in (0, 1):   # also 1.0, numpy's bools
        return bool(value)
    raise error(f"bgdask.{name} must be true or false, got {_short(repr(value))}")
