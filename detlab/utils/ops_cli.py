"""Argument parsing for tools whose config overrides may sit between options.

``tools/export_onnx.py --config-file C MODEL.WEIGHTS w.pth --output m.onnx`` mixes overrides and
options; :func:`parse_with_overrides` parses the options wherever they are and returns the
remaining tokens as ``args.opts`` (checked later by the config, one sentence on a bad key).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["parse_with_overrides"]


def parse_with_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_known_args``; tokens that are not options become ``args.opts``.

    A token starting with ``--`` that no option knows stays in ``opts``, where the config's
    override parser reports it as an unexpected option.
    """
    args, rest = parser.parse_known_args(argv)
    args.opts = list(getattr(args, "opts", None) or []) + list(rest)
    return args
