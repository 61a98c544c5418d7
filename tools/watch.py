#!/usr/bin/env python
"""The state of a training run at a glance: progress, ETA, loss trend, NaN skips, rollbacks,
clip events, the last evaluation and whether the run is alive, from RUN_DIR.

    python tools/watch.py output/quickstart_sar_ships_cpu            # once
    python tools/watch.py output/quickstart_sar_ships_cpu --follow   # refresh until it ends

With --follow the exit status says how the run ended: 0 finished, 1 died or stopped.
"""

import sys

from detlab.monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
