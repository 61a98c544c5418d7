"""``python -m detlab.sweep SPEC ...`` (what ``tools/sweep.sh`` runs)."""

import sys

from detlab.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
