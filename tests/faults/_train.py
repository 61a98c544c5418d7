"""``tools/train_net.py`` with the fault-tier trainers (see ``_faulty.py``)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _faulty  # noqa: E402

from detlab.engine.main import main_from_args  # noqa: E402
from detlab.utils.cli import default_argument_parser  # noqa: E402

if __name__ == "__main__":
    trainer = _faulty.TRAINERS[os.environ.get("DETLAB_FAULT_TRAINER", "toy")]
    sys.exit(main_from_args(default_argument_parser().parse_args(), trainer_cls=trainer))
