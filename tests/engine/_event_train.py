"""``tools/train_net.py`` with a sleep hook, for the event-stream SIGKILL test."""

import os
import sys
import time

from detlab.engine import HOOK_REGISTRY, HookBase
from detlab.engine.cli import main


@HOOK_REGISTRY.register()
class EventTestSleep(HookBase):
    """Slows iterations down so the test can kill the run between two checkpoints."""

    @classmethod
    def from_config(cls, cfg):
        return {}

    def after_step(self):
        time.sleep(float(os.environ.get("DETLAB_TEST_SLEEP", "0")))


if __name__ == "__main__":
    sys.exit(main())
