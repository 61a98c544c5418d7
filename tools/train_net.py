#!/usr/bin/env python
"""Train (or evaluate) a detector from a config file.

    python tools/train_net.py --config-file configs/quickstart/sar_ships_cpu.yaml
    python tools/train_net.py --config-file X.yaml --resume            # continue OUTPUT_DIR
    python tools/train_net.py --config-file X.yaml --eval-only MODEL.WEIGHTS out/model_best.pth
    python tools/train_net.py --config-file X.yaml --num-gpus 2        # DDP (gloo on CPU)

``MODEL.WEIGHTS`` initialises the model only when not resuming; ``--resume`` restores
everything (model, optimizer, schedule, RNG, data position, NaN-guard state) from
``OUTPUT_DIR/last_checkpoint``.
"""

import sys

from detlab.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
