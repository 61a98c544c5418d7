"""Shared pytest setup: keep tests on CPU, small thread counts and a private data cache."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
