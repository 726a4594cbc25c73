"""The ``bgdask match REPO`` options, kept out of bgdask.butler so that the
command line has them (and says what to install) without the Rubin packages.

Two entry points for bgdask/cli.py: :func:`add_butler_arguments` for the
``match`` parser and :func:`run_butler_match` for ``cmd_match``.
"""

from __future__ import annotations

import argparse
import os

from .errors import BgdaskError

__all__ = ["add_butler_arguments", "wants_butler", "run_butler_match"]


def add_butler_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "Butler repository",
        "INPUT may be a Rubin Data Butler repository (a directory with butler.yaml, or a Butler "
        "config URI); needs bgdask[butler] (Python >= 3.12). See docs/butler.md.",
    )
    g.add_argument("--collections", metavar="C1,C2", default=None,
                   help="Butler collections to search, in order (comma-separated)")
    g.add_argument("--where", metavar="EXPR", default=None,
                   help="Butler query expression, e.g. \"skymap='s' AND tract=9813 AND band='r'\"; "
                        "several (tract, band) groups give one store each under -o DIR/")
    g.add_argument("--dataset-type", metavar="NAME", default=None,
                   help="dataset type of the warps (default psf_matched_warp)")
    g.add_argument("--output-run", metavar="RUN", default=None,
                   help="also put the matched warps, offset images and per-visit table into this "
                        "RUN collection of the repository")


def _is_repo(source: str) -> bool:
    if "://" in source:
        return True
    if os.path.isdir(source):
        return os.path.exists(os.path.join(source, "butler.yaml"))
    return os.path.basename(source) in ("butler.yaml", "butler.json")


def wants_butler(args: argparse.Namespace) -> bool:
    """Whether ``bgdask match`` is to read a Butler repository."""
    named = any(getattr(args, k, None) is not None
                for k in ("collections", "where", "dataset_type", "output_run"))
    return named or _is_repo(str(getattr(args, "input", "")))


def run_butler_match(args: argparse.Namespace) -> int:
    """``bgdask match REPO ...``: a BgdaskError naming the extra when it is missing."""
    try:
        from .butler.cli import cmd_match_butler
    except ImportError as exc:
        if getattr(exc, "name", None) == "bgdask.butler":
            raise BgdaskError(str(exc)) from None
        raise BgdaskError(f"bgdask match REPO needs bgdask[butler] (Python >= 3.12): {exc}") from None
    return cmd_match_butler(args)
