#!/usr/bin/env python
"""Check that a config can train before a long run: environment, data, model, workers.

python tools/diagnose.py --config-file configs/quickstart/sar_ships_cpu.yaml [KEY VALUE ...]
python tools/diagnose.py --config-file CFG.yaml --json          # machine-readable report

Prints a ✓/✗ summary with a fix for each ✗. Exit status 0 when every check passes (warnings
allowed), 1 when one fails, 2 when the config itself is invalid (one line on stderr).
"""

import sys

from detlab.diagnostics.cli import main

if __name__ == "__main__":
    sys.exit(main())
