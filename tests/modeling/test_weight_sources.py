"""MODEL.WEIGHTS sources: torchvision://, timm://, https://, detectron2://, read from caches the
tests fill themselves (nothing is downloaded), hash checks, and the offline message."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import pytest
import torch
import torchvision

from detlab.modeling import build_model, load_model_weights
from detlab.modeling.weight_sources import DETECTRON2_URL, fetch_url
from detlab.modeling.weights import resolve_weights
from detlab.utils.errors import UserError


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Private torch-hub and Hugging Face caches, offline, with downloads made to fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("DETLAB_OFFLINE", "1")
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "iopath"))

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path


def _resnet18_cfg(tiny_cfg):
    cfg = tiny_cfg("FCOS", channels=3)
    cfg.MODEL.BACKBONE.NAME = "resnet18"
    cfg.MODEL.RESNETS.WIDTH_MULT = 1.0
    return cfg


def test_torchvision_weights_by_name_from_the_hub_cache(tiny_cfg, caches):
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    dst = caches / "torch" / "hub" / "checkpoints" / os.path.basename(url)
    dst.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), dst)
    spec = "torchvision://ResNet18_Weights.IMAGENET1K_V1"
    assert resolve_weights(spec) == str(dst)
    model = build_model(_resnet18_cfg(tiny_cfg))
    report = load_model_weights(model, spec)
    assert report["names"] == "torchvision"
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert sorted(report["unexpected"]) == ["backbone.fc.bias", "backbone.fc.weight"]


def test_offline_and_not_cached_says_what_to_place_where(caches):
    spec = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    dst = caches / "torch" / "hub" / "checkpoints" / "detectron2" / "ImageNetPretrained"
    with pytest.raises(UserError) as info:
        resolve_weights(spec)
    msg = str(info.value)
    assert f"download {DETECTRON2_URL}ImageNetPretrained/MSRA/R-50.pkl" in msg
    assert f"place it at {dst / 'MSRA' / 'R-50.pkl'}" in msg and "offline" in msg
    with pytest.raises(UserError, match=r"resnet50-11ad3fa6\.pth"):
        resolve_weights("torchvision://ResNet50_Weights.IMAGENET1K_V2")


def test_a_failed_download_is_the_same_sentence(caches, monkeypatch):
    from urllib.error import URLError

    monkeypatch.delenv("DETLAB_OFFLINE")

    def unreachable(*args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(UserError, match=r"cannot be downloaded \(URLError.*place it at"):
        resolve_weights("https://example.org/weights/model-0123abcd.pth")


def test_download_checks_the_published_hash(tmp_path, monkeypatch):
    """A real download (from a file:// URL): the hash prefix in the name is checked."""
    monkeypatch.delenv("DETLAB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    data = tmp_path / "data.pth"
    torch.save({"w": torch.arange(4.0)}, data)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    good_src, bad_src = src / f"model-{digest[:8]}.pth", src / "model-deadbeef.pth"
    good_src.write_bytes(data.read_bytes())
    bad_src.write_bytes(data.read_bytes())
    good = tmp_path / "cache" / good_src.name
    assert fetch_url("spec", good_src.as_uri(), str(good)) == str(good)
    assert good.read_bytes() == data.read_bytes()
    bad = tmp_path / "cache" / bad_src.name
    with pytest.raises(UserError, match="does not match its published hash"):
        fetch_url("spec", bad_src.as_uri(), str(bad))
    assert not bad.exists() and sorted(p.name for p in bad.parent.iterdir()) == [good.name]
    # an explicit #sha256= fragment is checked the same way
    with pytest.raises(UserError, match="published hash"):
        fetch_url("spec", data.as_uri(), str(tmp_path / "c2" / "x.pth"), sha256="00" * 32)


def test_https_and_detectron2_sources_map_to_cache_paths(caches):
    hub = caches / "torch" / "hub" / "checkpoints"
    f = hub / "detectron2" / "COCO-Detection" / "x" / "model_final_abc.pkl"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    assert resolve_weights("detectron2://COCO-Detection/x/model_final_abc.pkl") == str(f)
    # a file Detectron2 already downloaded (its iopath cache) is read where it is
    d2 = caches / "iopath" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-101.pkl"
    d2.parent.mkdir(parents=True)
    d2.write_bytes(b"x")
    assert resolve_weights("detectron2://ImageNetPretrained/MSRA/R-101.pkl") == str(d2)
    g = hub / "weights.pth"
    g.write_bytes(b"x")
    assert resolve_weights("https://example.org/a/b/weights.pth") == str(g)
    assert resolve_weights("https://example.org/a/b/weights.pth#sha256=00") == str(g)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("ftp://host/w.pth", "uses the scheme ftp://, which detlab cannot read"),
        ("torchvision://ResNet50_Weights.NOPE", "names no torchvision weights"),
        ("detectron2://../etc/passwd", "not a model-zoo path"),
        ("https://example.org/", "does not end in a file name"),
    ],
)
def test_bad_specs_are_one_sentence(spec, fragment, caches):
    with pytest.raises(UserError) as info:
        resolve_weights(spec)
    assert fragment in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_weights_from_the_hugging_face_cache(tiny_cfg, caches):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    src = torchvision.models.resnet18(weights=None)  # timm's resnet18 has the same names
    repo = caches / "hf" / "models--timm--resnet18.a1_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, snap / "model.safetensors")
    model = build_model(_resnet18_cfg(tiny_cfg))
    report = load_model_weights(model, "timm://resnet18.a1_in1k")
    torch.testing.assert_close(model.backbone.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    assert report["names"] == "torchvision" and not any(
        k.startswith("backbone.") for k in report["missing"]
    )
    with pytest.raises(UserError, match="models--timm--resnet50.a1_in1k"):
        resolve_weights("timm://resnet50.a1_in1k")  # not cached, offline
    # the same weights under the URL timm also publishes, in torch hub's cache, are read too
    import timm

    url = timm.models.get_pretrained_cfg("resnet50.a1_in1k").url
    hub = caches / "torch" / "hub" / "checkpoints" / os.path.basename(url)
    hub.parent.mkdir(parents=True, exist_ok=True)
    hub.write_bytes(b"x")
    assert resolve_weights("timm://resnet50.a1_in1k") == str(hub)
    with pytest.raises(UserError, match="names no timm pretrained weights"):
        resolve_weights("timm://no_such_net")
