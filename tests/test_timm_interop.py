"""A model file that tucker_init writes loads with nothing but timm (issue 13: plain-timm
interop): ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), ...)``
with the name and kwargs recorded in the file, and computes exactly what the saved model does."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open

from tucker_init.pipeline import ModelSpec, save_model


def timm_only_load(path) -> torch.nn.Module:
    """What a user without tucker_init writes."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["timm"])
    overlay = {"file": str(path), "num_classes": meta["kwargs"]["num_classes"]}
    return timm.create_model(meta["name"], pretrained=True, pretrained_cfg_overlay=overlay, **meta["kwargs"])


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("vit", 3, 128, num_classes=7, img_size=32, patch_size=4),
        ModelSpec("resnet", 2, 16, num_classes=10, img_size=32),
        ModelSpec("resnetd", 2, 16, num_classes=10, img_size=32),
        ModelSpec("convnext", 2, 16, num_classes=5, img_size=32),
        ModelSpec("deit_tiny_patch16_224", None, None, num_classes=10, img_size=32, patch_size=8),
        ModelSpec("resnet18", None, None, num_classes=3, img_size=32, patch_size=None),
    ],
    ids=lambda s: s.name,
)
def test_model_files_load_with_timm_alone(tmp_path, spec):
    torch.manual_seed(0)
    model = spec.build().eval()
    with torch.no_grad():  # non-default values everywhere, so a tensor left at its init would show
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_model(tmp_path / "m.safetensors", model, spec)
    loaded = timm_only_load(path).eval()
    assert list(loaded.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
