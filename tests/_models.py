"""Small real timm models shared by the tests, with weights perturbed so that every
parameter matters (timm zero-initializes some: ConvNeXt layer scale 1e-6, ResNet last BN)."""

from __future__ import annotations

import torch
from timm.models.convnext import ConvNeXt
from timm.models.deit import VisionTransformerDistilled
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

# Relative tolerances: max |found - expected| <= rtol * max |expected|, never an absolute one
# (an absolute bound fails on logits of magnitude 10 and means nothing on weights of 1e-3).
# float32 carries eps = 1.2e-7. RTOL is for tensors that a few contractions over at most some
# thousand terms produce (reconstructed weights, one matrix product): lossless results land
# at 1e-8 to 6e-7 of the tensor's scale, 1e-5 leaves a margin of 15 or more. OUTPUT_RTOL is
# for what a whole small network computes from such tensors (logits, features, a loss): its
# layers add up their round-off and the conv / matmul kernels that oneDNN or the BLAS picks
# differ by machine and thread count; seen up to 1.7e-6 here, 5e-5 leaves a margin of 30.
# Both stay far below what a real error gives (a lost slice, a missing rank: 1e-2 and more).
# float64 results land below 2e-14; 1e-10 leaves a wide margin and still catches a float32
# round trip (1e-7).
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
OUTPUT_RTOL = {torch.float32: 5e-5, torch.float64: 1e-10}


def rel_error(found: Tensor, expected: Tensor) -> float:
    """``max |found - expected| / max |expected|`` (0 for two equal zero tensors)."""
    expected, found = torch.as_tensor(expected).detach(), torch.as_tensor(found).detach()
    if expected.numel() == 0:
        return 0.0
    scale = expected.abs().max().item()
    diff = (found - expected).abs().max().item()
    return diff / scale if scale else (0.0 if diff == 0 else float("inf"))


def assert_close_rel(
    found: Tensor, expected: Tensor, rtol: float | None = None, *, scale: float | None = None, msg: str = ""
) -> None:
    """``found`` equals ``expected`` up to ``rtol`` times the scale of ``expected``.

    Every element must satisfy ``|found - expected| <= rtol * scale`` with ``scale`` the largest
    magnitude in ``expected`` unless given (a zero ``expected`` then means exactly zero). The
    default ``rtol`` is ``RTOL`` of the dtype; shapes and dtypes must match as in
    ``torch.testing.assert_close``, and integer tensors must be equal.
    """
    expected, found = torch.as_tensor(expected), torch.as_tensor(found)
    if not expected.is_floating_point():
        torch.testing.assert_close(found, expected, rtol=0, atol=0, msg=msg or None)
        return
    rtol = RTOL[expected.dtype] if rtol is None else rtol
    if scale is None:
        scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    scale = float(scale)
    prefix = f"{msg}: " if msg else ""

    def message(default: str) -> str:
        if found.shape != expected.shape:
            return f"{prefix}{default}"
        diff = (found.detach() - expected.detach()).abs().max().item()
        return f"{prefix}max |diff| {diff:.3g} > {rtol:g} * scale {scale:.3g}\n{default}"

    torch.testing.assert_close(found, expected, rtol=0, atol=rtol * scale, msg=message)


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
    return VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)


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
