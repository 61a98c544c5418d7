"""``tools/train_net.py`` with the toy trainer, for subprocess tests (DDP, SIGKILL resume)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _toy  # noqa: E402

from detlab.engine.main import main_from_args  # noqa: E402
from detlab.utils.cli import default_argument_parser  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_from_args(default_argument_parser().parse_args(), trainer_cls=_toy.ToyTrainer))
