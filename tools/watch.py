#!/usr/bin/env python
"""The state of a training run at a glance: progress, ETA, loss trend, NaN skips, rollbacks,
clip events and the last evaluation, read from RUN_DIR/metrics.jsonl.

    python tools/watch.py output/quickstart_sar_ships_cpu            # once
    python tools/watch.py output/quickstart_sar_ships_cpu --follow   # refresh until finished
"""

import sys

from detlab.monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
