"""``tools/train_net.py`` with the fault-tier trainers (see ``_faulty.py``)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _faulty  # noqa: E402

from detlab.engine.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(trainer_cls=_faulty.TRAINERS[os.environ.get("DETLAB_FAULT_TRAINER", "toy")]))
