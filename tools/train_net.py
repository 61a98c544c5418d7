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

from __future__ import annotations

import sys

from detlab.engine.main import main_from_args
from detlab.utils.cli import default_argument_parser

if __name__ == "__main__":
    args = default_argument_parser(__doc__.splitlines()[0]).parse_args()
    sys.exit(main_from_args(args))
