"""Small real timm models shared by the tests, with weights perturbed so that every
parameter matters (timm zero-initializes some: ConvNeXt layer scale 1e-6, ResNet last BN)."""

from __future__ import annotations

import torch
from timm.models.convnext import ConvNeXt
from timm.models.deit import VisionTransformerDistilled
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm affines, layer scales and BN statistics non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                if name.endswith(("weight", "gamma")):
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def tiny_vit(depth: int = 2, embed_dim: int = 64, num_heads: int = 2, **kw) -> VisionTransformer:
    kw = {"img_size": 32, "patch_size": 8, "num_classes": 10} | kw
    return VisionTransformer(embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kw)


def tiny_deit() -> VisionTransformerDistilled:
    return VisionTransformerDistilled(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10
    )


def tiny_resnet(bottleneck: bool = False, layers=(2, 2, 1, 1)) -> ResNet:
    block = Bottleneck if bottleneck else BasicBlock
    channels = (16, 32, 64, 128) if not bottleneck else (8, 16, 32, 64)
    return ResNet(block, layers=layers, channels=channels, stem_width=16, num_classes=10)


def tiny_convnext(depths=(2, 1, 2, 1)) -> ConvNeXt:
    return ConvNeXt(depths=depths, dims=(16, 32, 48, 64), num_classes=10)


BUILDERS = {
    "vit": tiny_vit,
    "deit": tiny_deit,
    "resnet": tiny_resnet,
    "resnet_bottleneck": lambda: tiny_resnet(bottleneck=True),
    "convnext": tiny_convnext,
}


def build(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return perturb(BUILDERS[name](), seed).to(dtype).eval()
