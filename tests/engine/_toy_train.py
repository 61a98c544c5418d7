"""``tools/train_net.py`` with the toy trainer, for subprocess tests (DDP, SIGKILL resume)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _toy  # noqa: E402

from detlab.engine.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(trainer_cls=_toy.ToyTrainer))
