"""Shared pytest setup: keep tests on CPU, small thread counts and a private data cache."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run, so a suite that passed keeps passing on
# a clean checkout; set DETLAB_HYPOTHESIS_EXPLORE=1 to search with fresh random examples.
settings.register_profile("detlab", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("DETLAB_HYPOTHESIS_EXPLORE") else "detlab")
