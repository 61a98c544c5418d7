"""Registries: registration, lookup errors that list names and suggest the closest."""

from __future__ import annotations

import pytest

from detlab.utils.errors import UnknownNameError, UserError
from detlab.utils.registry import Registry


def make_registry() -> Registry:
    reg = Registry("BACKBONE", doc="test registry")

    @reg.register()
    class ResNet50:
        pass

    @reg.register()
    class ResNet18:
        pass

    return reg


def test_register_and_get():
    reg = make_registry()
    assert reg.get("ResNet50").__name__ == "ResNet50"
    assert reg.names() == ["ResNet18", "ResNet50"]
    assert reg.__doc__ == "test registry"


def test_unknown_name_lists_and_suggests():
    reg = make_registry()
    with pytest.raises(UnknownNameError) as info:
        reg.get("ResNet05")
    msg = str(info.value)
    assert "No BACKBONE named 'ResNet05'" in msg
    assert "registered: ResNet18, ResNet50" in msg
    assert "did you mean 'ResNet50'?" in msg
    assert isinstance(info.value, (KeyError, UserError))


def test_unknown_name_without_close_match():
    with pytest.raises(UnknownNameError) as info:
        make_registry().get("transformer")
    assert "did you mean" not in str(info.value)


def test_duplicate_registration_fails():
    reg = make_registry()
    with pytest.raises(AssertionError):

        @reg.register()
        class ResNet50:  # noqa: F811
            pass


def test_family_registries_have_contracts():
    from detlab.data import MAPPER_REGISTRY
    from detlab.engine import HOOK_REGISTRY
    from detlab.modeling import (
        BACKBONE_REGISTRY,
        DENSE_HEAD_REGISTRY,
        META_ARCH_REGISTRY,
        NECK_REGISTRY,
        PROPOSAL_GENERATOR_REGISTRY,
        ROI_HEADS_REGISTRY,
        SIZE_WEIGHT_REGISTRY,
    )

    for reg in (
        BACKBONE_REGISTRY,
        NECK_REGISTRY,
        DENSE_HEAD_REGISTRY,
        PROPOSAL_GENERATOR_REGISTRY,
        ROI_HEADS_REGISTRY,
        META_ARCH_REGISTRY,
        MAPPER_REGISTRY,
        HOOK_REGISTRY,
        SIZE_WEIGHT_REGISTRY,
    ):
        assert isinstance(reg, Registry)
        assert len(reg.__doc__) > 80  # states a contract, not just a name
