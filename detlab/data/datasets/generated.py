"""Folders generated once: the data cache root and an atomic, race-safe "build it once".

Used by the built-in synthetic datasets (SAR images, event recordings).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable

from detlab.utils.errors import UserError
from detlab.utils.file_io import folder_mode

__all__ = ["build_folder_once", "data_root"]

logger = logging.getLogger(__name__)
_DONE = "COMPLETE"


def data_root() -> str:
    """``$DETLAB_DATA`` if set, else the user's cache folder (``~/.cache/detlab``)."""
    root = os.environ.get("DETLAB_DATA")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    try:
        import platformdirs

        return platformdirs.user_cache_dir("detlab")
    except ImportError:  # pragma: no cover - platformdirs ships with pip-installed setuptools
        return os.path.join(os.path.expanduser("~"), ".cache", "detlab")


def build_folder_once(
    out_dir: str, fingerprint: str, fill: Callable[[str], None], what: str
) -> str:
    """Create ``out_dir`` by ``fill(temporary folder)`` and a rename, unless it already holds a
    complete copy with the same ``fingerprint``; returns ``out_dir``.

    Concurrent callers each fill a private temporary folder; the first rename wins and the
    others read its copy. A stale incomplete folder in the way is replaced. ``what`` names
    the content in messages ("synthetic SAR set").
    """
    out_dir = os.path.abspath(out_dir)
    done = os.path.join(out_dir, _DONE)
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            if f.read().strip() != fingerprint:
                raise UserError(
                    f"{out_dir} already holds a different {what}; choose another output "
                    "folder or delete it."
                )
        return out_dir
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"{out_dir} exists and is not empty; choose another output folder.")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        t0 = time.time()
        fill(tmp)
        with open(os.path.join(tmp, _DONE), "w", encoding="utf-8") as f:
            f.write(fingerprint + "\n")
        os.chmod(tmp, folder_mode())  # mkdtemp's 0700 would hide a shared cache from others
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished first (or a stale incomplete folder is in the way).
            if not os.path.isfile(done):
                stale = f"{out_dir}.stale-{uuid.uuid4().hex[:8]}"
                os.rename(out_dir, stale)
                shutil.rmtree(stale, ignore_errors=True)
                os.rename(tmp, out_dir)
        else:
            logger.info("Generated the %s in %s (%.1f s).", what, out_dir, time.time() - t0)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
