"""Where ``MODEL.WEIGHTS`` comes from: one table of sources, each resolving to a local file.

:data:`SOURCES` maps a URI scheme to ``source(spec) -> local path``;
:mod:`detlab.modeling.weights` registers them in its ``WEIGHT_SOURCE_REGISTRY``.

=========================================  ==============================================
``MODEL.WEIGHTS``                           resolved to
=========================================  ==============================================
``torchvision://ResNet50_Weights.IMAGENET1K_V2``
                                            torchvision's URL for that weights enum member,
                                            cached in torch hub's ``checkpoints/`` folder
``timm://resnet50.a1_in1k``                 timm's pretrained weights for ``model.tag``
                                            (``timm://resnet50``: its default tag), from the
                                            Hugging Face cache, or torch hub's for the URL
                                            timm also publishes (either cache is read)
``https://host/path/file.pth``              torch hub's ``checkpoints/<file name>``
``detectron2://ImageNetPretrained/MSRA/R-50.pkl``
                                            Detectron2's model zoo at
                                            ``https://dl.fbaipublicfiles.com/detectron2/``,
                                            cached in ``checkpoints/detectron2/<path>``
                                            (a file Detectron2 itself downloaded, in
                                            ``$FVCORE_CACHE`` or ``~/.torch/iopath_cache``,
                                            is read in place)
=========================================  ==============================================

A file is downloaded once (with a progress bar) and read from the cache afterwards. Hashes are
checked where the source publishes one: the ``-<sha256 prefix>.`` in torchvision/torch-hub
file names, or a ``#sha256=<hex>`` fragment on any URL; Hugging Face checks its own
downloads. With ``DETLAB_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) nothing is downloaded; a file
that is not cached, offline or after a failed download, is one error naming the URL and the
path to place the file at. Caches follow their libraries' settings (``TORCH_HOME``,
``HF_HUB_CACHE``/``HF_HOME``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from detlab.utils.errors import UserError

__all__ = ["DETECTRON2_URL", "SOURCES", "fetch_url", "is_offline"]

logger = logging.getLogger(__name__)

DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"
_TRUE = {"1", "true", "yes", "on"}
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch hub's convention: name-<sha256[:n]>.ext


def is_offline() -> bool:
    """True when ``DETLAB_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("DETLAB_OFFLINE", "HF_HUB_OFFLINE")
    )


def _hub_checkpoints() -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _not_available(spec: str, url: str, dst: str, reason: str) -> UserError:
    return UserError(
        f"MODEL.WEIGHTS {spec} is not in the cache and cannot be downloaded ({reason}); "
        f"download {url} where there is network access and place it at {dst}, or set "
        "MODEL.WEIGHTS to a local file."
    )


def fetch_url(spec: str, url: str, dst: str, sha256: str | None = None) -> str:
    """``dst`` if cached, else download ``url`` there (progress bar, atomic, hash-checked).

    ``sha256`` is a full hash or a prefix of one; None takes a ``-<hex>.`` prefix from the
    file name when there is one.
    """
    if os.path.isfile(dst):
        return dst
    if is_offline():
        raise _not_available(spec, url, dst, "offline: DETLAB_OFFLINE or HF_HUB_OFFLINE is set")
    if sha256 is None:
        match = _HASH_IN_NAME.search(os.path.basename(urlsplit(url).path))
        sha256 = match.group(1) if match else None
    import torch

    os.makedirs(os.path.dirname(dst), exist_ok=True)
    logger.info("Downloading %s to %s%s", url, dst, "" if sha256 else " (no published hash)")
    try:
        torch.hub.download_url_to_file(url, dst, hash_prefix=sha256, progress=True)
    except RuntimeError as err:
        if "hash" in str(err):
            raise UserError(
                f"MODEL.WEIGHTS {spec}: the file downloaded from {url} does not match its "
                f"published hash ({err}); it was not kept. Try again, or check the URL."
            ) from None
        raise
    except OSError as err:  # URLError, HTTPError, timeouts, refused connections
        raise _not_available(spec, url, dst, f"{type(err).__name__}: {err}") from None
    return dst


# ---------------------------------------------------------------------- sources
def _torchvision(spec: str) -> str:
    rest = spec.partition("://")[2]
    from torchvision.models import get_weight

    try:
        weights = get_weight(rest)
    except (ValueError, KeyError, AttributeError):
        raise UserError(
            f"MODEL.WEIGHTS {spec} names no torchvision weights; write "
            "torchvision://<WeightsEnum>.<member>, e.g. torchvision://ResNet50_Weights.IMAGENET1K_V2."
        ) from None
    url = weights.url
    return fetch_url(
        spec, url, os.path.join(_hub_checkpoints(), os.path.basename(urlsplit(url).path))
    )


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "huggingface"
    )
    return os.path.join(home, "hub")


def _timm(spec: str) -> str:
    rest = spec.partition("://")[2]
    try:
        import timm
    except ImportError:
        raise UserError(f"MODEL.WEIGHTS {spec} needs timm: pip install 'detlab[timm]'.") from None
    try:
        cfg = timm.models.get_pretrained_cfg(rest)
    except RuntimeError as err:
        raise UserError(f"MODEL.WEIGHTS {spec}: {err}") from None
    if cfg is None:
        hints = timm.list_models(f"*{rest.split('.')[0]}*", pretrained=True)[:5]
        raise UserError(
            f"MODEL.WEIGHTS {spec} names no timm pretrained weights"
            + (f"; e.g. {', '.join('timm://' + h for h in hints)}." if hints else ".")
        )
    url = cfg.url or ""
    url_dst = os.path.join(_hub_checkpoints(), os.path.basename(urlsplit(url).path)) if url else ""
    if url_dst and os.path.isfile(url_dst):  # already in torch hub's cache (timm's URL route)
        return url_dst
    if cfg.hf_hub_id:
        try:
            return _from_hf(spec, cfg.hf_hub_id)
        except UserError:
            if not url or is_offline():
                raise
    if url:
        return fetch_url(spec, url, url_dst)
    raise UserError(f"MODEL.WEIGHTS {spec}: timm publishes no download for these weights.")


def _from_hf(spec: str, hub_id: str) -> str:
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(
            f"MODEL.WEIGHTS {spec} needs huggingface_hub (installed with timm)."
        ) from None
    repo, _, revision = hub_id.partition("@")
    cache = _hf_cache_dir()
    offline = is_offline()
    last: Exception | None = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return huggingface_hub.hf_hub_download(
                repo, filename, revision=revision or None, cache_dir=cache, local_files_only=offline
            )
        except Exception as err:  # noqa: BLE001 - not cached, no such file, no network: next
            last = err
    folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
    url = f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/model.safetensors"
    reason = "offline" if offline else type(last).__name__
    raise UserError(
        f"MODEL.WEIGHTS {spec} is not in the Hugging Face cache and cannot be downloaded "
        f"({reason}); download {url} where there is network access and set MODEL.WEIGHTS to "
        f"that file, or copy that machine's {folder} folder to {folder} here."
    )


def _https(spec: str) -> str:
    url, _, fragment = spec.partition("#")
    sha = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
    name = os.path.basename(urlsplit(url).path)
    if not name:
        raise UserError(f"MODEL.WEIGHTS {spec} does not end in a file name; give the file's URL.")
    return fetch_url(spec, url, os.path.join(_hub_checkpoints(), name), sha)


def _detectron2(spec: str) -> str:
    rest = spec.partition("://")[2]
    rel = rest.lstrip("/")
    if not rel or ".." in rel.split("/"):
        raise UserError(
            f"MODEL.WEIGHTS {spec} is not a model-zoo path; write e.g. "
            "detectron2://ImageNetPretrained/MSRA/R-50.pkl."
        )
    dst = os.path.join(_hub_checkpoints(), "detectron2", *rel.split("/"))
    # Detectron2's own download cache (iopath): a Detectron2 user's files are read in place.
    iopath = os.path.expanduser(os.environ.get("FVCORE_CACHE", "~/.torch/iopath_cache"))
    theirs = os.path.join(iopath, "detectron2", *rel.split("/"))
    if not os.path.isfile(dst) and os.path.isfile(theirs):
        return theirs
    return fetch_url(spec, DETECTRON2_URL + rel, dst)


# scheme -> source(spec) -> local path; detlab.modeling.weights registers each in
# WEIGHT_SOURCE_REGISTRY, which resolves MODEL.WEIGHTS.
SOURCES: dict[str, Callable[[str], str]] = {
    "torchvision": _torchvision,
    "timm": _timm,
    "https": _https,
    "http": _https,
    "detectron2": _detectron2,
}
