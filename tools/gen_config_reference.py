#!/usr/bin/env python
"""Write docs/config_reference.md from the defaults (``--check`` exits 1 when it is stale)."""

import sys

from detlab.config.cli import main

if __name__ == "__main__":
    sys.exit(main())
