#!/usr/bin/env python
"""Write docs/config_reference.md from the defaults (``--check`` exits 1 when it is stale)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detlab.config.reference import config_reference_markdown

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "config_reference.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument("--check", action="store_true", help="only check that --out is current")
    args = parser.parse_args(argv)
    text = config_reference_markdown()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale; run python tools/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
