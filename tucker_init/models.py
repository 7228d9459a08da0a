"""Model factory used by the CLI, the demo and the experiments: sizes by depth and width.

``create_model("vit", depth=6, width=128)`` builds a timm ``VisionTransformer`` for small
images (head dimension 64, so width = 64 * heads); ``"resnet"``, ``"resnetd"`` and
``"convnext"`` build timm CNNs whose stage widths scale with ``width`` (``"resnetd"``: the
ResNet-D deep stem, which scales too, so its templates can change width); ``"swin"`` a timm
``SwinTransformer`` of three stages for small images (:func:`swin_config`); any other name goes to
``timm.create_model`` unchanged (e.g. ``"resnet18"``, ``"deit_tiny_patch16_224"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = [
    "DEFAULT_SIZES",
    "FAMILIES",
    "ModelSpec",
    "check_size",
    "create_model",
    "parse_size",
    "size_name",
    "swin_config",
    "timm_equivalent",
]

FAMILIES = ("vit", "resnet", "resnetd", "convnext", "swin")
HEAD_DIM = 64
# Swin: timm's head size (every swin_* of timm has 32), stages and window at small image sizes.
SWIN_HEAD_DIM = 32
SWIN_STAGES = 3
SWIN_WINDOW = 4
# (depth, width) that create_model uses for a family when depth / width is None.
DEFAULT_SIZES = {"vit": (6, 192), "resnet": (2, 32), "resnetd": (2, 32), "convnext": (2, 32), "swin": (2, 64)}


def check_size(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` must be a positive int (``None`` too when ``allow_none``, meaning "the default").

    Raises:
        ValueError: naming ``name``, what was expected and what was found (0 is not "default").
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int" + (" or None (the default)" if allow_none else "")
        raise ValueError(f"{name} must be {expected}, found {value!r}")
    return value


def _sized(name: str, depth: int | None, width: int | None) -> tuple[int, int]:
    """The family's size with ``None`` taking :data:`DEFAULT_SIZES`, checked positive."""
    default_depth, default_width = DEFAULT_SIZES[name]
    depth = check_size(f"{name} depth", default_depth if depth is None else depth)
    width = check_size(f"{name} width", default_width if width is None else width)
    return depth, width  # type: ignore[return-value]


def create_model(
    name: str,
    *,
    depth: int | None = None,
    width: int | None = None,
    num_classes: int = 10,
    img_size: int | None = None,
    patch_size: int | None = None,
    in_chans: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """A model of the family ``name`` at the given depth and width.

    Args:
        name: ``"vit"``, ``"resnet"``, ``"resnetd"``, ``"convnext"``, ``"swin"`` or any timm model name.
        depth: ViT blocks; CNNs: blocks per stage in the last three stages (the first has
            ``max(1, depth // 2)``), so depth 2 gives a ResNet-18-like ``(1, 2, 2, 2)``; Swin:
            blocks in each of its three stages. ``None``: the family's default (:data:`DEFAULT_SIZES`).
        width: ViT embedding width (a multiple of 64); CNNs and Swin: first-stage width (stages
            double it; Swin: a multiple of 32, its head size). ``None``: the family's default.
        num_classes, in_chans: as in timm.
        img_size, patch_size: ViT and Swin input and patch size (``None``: 32 and 4); for a timm
            name they are passed on when given (``img_size`` only to models that take it).

    Raises:
        ValueError: a size that the family cannot take, naming what would work; depth or
            width for a timm name; an unknown name.
    """
    check_size("num_classes", num_classes)
    check_size("img_size", img_size, allow_none=True)
    check_size("patch_size", patch_size, allow_none=True)
    if name in _BUILDERS:
        return _BUILDERS[name](name, depth, width, num_classes, img_size, patch_size, in_chans, kwargs)
    if depth is not None or width is not None:
        raise ValueError(
            f"depth/width apply to the families {list(FAMILIES)}; for the timm model {name!r} leave them unset, "
            f"found depth={depth!r}, width={width!r}"
        )
    return _create_timm(name, num_classes, img_size, patch_size, in_chans, kwargs)


def _create_vit(
    name: str,
    depth: int | None,
    width: int | None,
    num_classes: int,
    img_size: int | None,
    patch_size: int | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> VisionTransformer:
    depth, width = _sized("vit", depth, width)
    if width % HEAD_DIM:
        raise ValueError(f"vit width must be a multiple of the head size {HEAD_DIM}, found {width}")
    return VisionTransformer(
        img_size=32 if img_size is None else img_size,
        patch_size=4 if patch_size is None else patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=width,
        depth=depth,
        num_heads=width // HEAD_DIM,
        **kwargs,
    )


def swin_config(
    depth: int | None, width: int | None, img_size: int | None = None, patch_size: int | None = None
) -> dict[str, Any]:
    """The ``SwinTransformer`` arguments of the ``"swin"`` family: three stages of ``depth`` blocks,
    widths ``width * (1, 2, 4)`` in heads of 32 (timm's head size), windows of 4 patches, patch size
    4 (``None``). At 32 px that is an 8 x 8 patch grid, then 4 x 4 and 2 x 2 after the two patch
    mergings; timm clips a window larger than its stage's grid to the grid and shifts only the
    windows of a stage larger than one window (here stage 0: stage 1's 4 x 4 is a single window,
    stage 2's window is 2).

    Raises:
        ValueError: a width that is not a multiple of 32, or an image whose patch grid the two
            patch mergings cannot halve (its side must be a multiple of ``4 * patch_size``).
    """
    depth, width = _sized("swin", depth, width)
    img_size = 32 if img_size is None else img_size
    patch_size = 4 if patch_size is None else patch_size
    if width % SWIN_HEAD_DIM:
        raise ValueError(
            f"swin width must be a multiple of its head size {SWIN_HEAD_DIM} (e.g. 32, 64, 96), found {width}"
        )
    reduction = patch_size * 2 ** (SWIN_STAGES - 1)
    if img_size % reduction:
        raise ValueError(
            f"swin img_size must be a multiple of {reduction} (patch_size {patch_size} times 2 per patch merging), "
            f"found {img_size}"
        )
    heads = width // SWIN_HEAD_DIM
    return {
        "img_size": img_size,
        "patch_size": patch_size,
        "embed_dim": width,
        "depths": (depth,) * SWIN_STAGES,
        "num_heads": tuple(heads * 2**i for i in range(SWIN_STAGES)),
        "window_size": SWIN_WINDOW,
    }


def _stages(name: str, depth: int | None, width: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Blocks and widths of a CNN family's four stages."""
    depth, width = _sized(name, depth, width)
    return (max(1, depth // 2), depth, depth, depth), tuple(width * 2**i for i in range(4))


def _create_swin(
    name: str,
    depth: int | None,
    width: int | None,
    num_classes: int,
    img_size: int | None,
    patch_size: int | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> SwinTransformer:
    config = swin_config(depth, width, img_size, patch_size)
    # drop_path 0 as for the other families (timm's Swin default is 0.1); kwargs may set it.
    return SwinTransformer(num_classes=num_classes, in_chans=in_chans, **config, **({"drop_path_rate": 0.0} | kwargs))


def _create_cnn(
    name: str,
    depth: int | None,
    width: int | None,
    num_classes: int,
    img_size: int | None,
    patch_size: int | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> nn.Module:
    """ResNet / ResNet-D / ConvNeXt (image and patch size do not shape a CNN)."""
    depths, widths = _stages(name, depth, width)
    width = widths[0]
    if name == "resnetd":
        # Deep stem: 3x3 convs of width/2, width/2, width channels (timm's plain stem is 64 wide
        # at every width, so a plain ResNet's first block changes proportions with the width).
        if width % 2:
            raise ValueError(f"resnetd width must be even (its stem is width / 2 wide), found {width}")
        kwargs = {"stem_type": "deep", "stem_width": width // 2} | kwargs
    if name in ("resnet", "resnetd"):
        return ResNet(BasicBlock, layers=depths, channels=widths, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return ConvNeXt(depths=depths, dims=widths, num_classes=num_classes, in_chans=in_chans, **kwargs)


# The families by name: each builder takes (name, depth, width, num_classes, img_size, patch_size,
# in_chans, kwargs); FAMILIES lists them.
_BUILDERS = {
    "vit": _create_vit,
    "resnet": _create_cnn,
    "resnetd": _create_cnn,
    "convnext": _create_cnn,
    "swin": _create_swin,
}


def _create_timm(
    name: str,
    num_classes: int,
    img_size: int | None,
    patch_size: int | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> nn.Module:
    """``timm.create_model(name)``; ``img_size`` is dropped for models that do not take it (CNNs
    accept any input size), ``patch_size`` is not."""
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(
            f"model must be one of the families {list(FAMILIES)} or a timm model name (timm.list_models()), "
            f"found {name!r}"
        )
    base = {"num_classes": num_classes, "in_chans": in_chans, "pretrained": False, **kwargs}
    return timm.create_model(name, **base, **_accepted_sizes(name, base, img_size, patch_size))


def _accepted_sizes(name: str, base: dict[str, Any], img_size: int | None, patch_size: int | None) -> dict[str, int]:
    """The given ``img_size`` / ``patch_size`` that the timm model ``name`` takes (tried on the
    meta device: no memory, no init)."""
    sizes = {k: v for k, v in (("img_size", img_size), ("patch_size", patch_size)) if v is not None}
    while True:
        try:
            with torch.device("meta"):
                timm.create_model(name, **base, **sizes)
            return sizes
        except TypeError as err:
            refused = [k for k in sizes if f"'{k}'" in str(err)]
            if not refused:
                raise
            if refused[0] == "patch_size":
                raise ValueError(f"the timm model {name!r} does not take a patch_size, found {patch_size}") from err
            del sizes["img_size"]


def timm_equivalent(
    name: str,
    *,
    depth: int | None = None,
    width: int | None = None,
    num_classes: int = 10,
    img_size: int | None = None,
    patch_size: int | None = None,
    in_chans: int = 3,
) -> tuple[str, dict[str, Any]]:
    """A registered timm model name and the keyword arguments with which ``timm.create_model``
    builds the very architecture that :func:`create_model` builds (same parameter names and
    shapes), so that a model file loads with timm alone::

        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH,
                          num_classes=kwargs["num_classes"]), **kwargs)
    """
    common = {"num_classes": num_classes, "in_chans": in_chans}
    if name == "vit":
        depth, width = _sized("vit", depth, width)
        sizes = {
            "img_size": 32 if img_size is None else img_size,
            "patch_size": 4 if patch_size is None else patch_size,
        }
        return "vit_tiny_patch16_224", {
            **sizes,
            "embed_dim": width,
            "depth": depth,
            "num_heads": width // HEAD_DIM,
            **common,
        }
    if name in ("resnet", "resnetd", "convnext"):
        depths, widths = _stages(name, depth, width)
        if name == "convnext":  # convnext_atto's own conv_mlp=True is not ConvNeXt's default
            return "convnext_atto", {"depths": list(depths), "dims": list(widths), "conv_mlp": False, **common}
        stem = {"stem_type": "deep", "stem_width": widths[0] // 2} if name == "resnetd" else {}
        return "resnet18", {"layers": list(depths), "channels": list(widths), **stem, **common}
    if name == "swin":
        config = swin_config(depth, width, img_size, patch_size)
        lists = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
        return "swin_tiny_patch4_window7_224", {**lists, "drop_path_rate": 0.0, **common}
    base = {**common, "pretrained": False}
    return name, {**common, **_accepted_sizes(name, base, img_size, patch_size)}


def parse_size(text: str) -> tuple[int, int]:
    """``"L6w128"`` or ``"6x128"`` -> ``(depth, width)``."""
    cleaned = text.strip().lower().replace("l", "").replace("w", "x")
    parts = cleaned.split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like 'L6w128' (depth 6, width 128), found {text!r}")
    return int(parts[0]), int(parts[1])


def size_name(depth: int, width: int) -> str:
    """``(6, 128)`` -> ``"L6w128"``."""
    return f"L{depth}w{width}"


@dataclass(frozen=True)
class ModelSpec:
    """A model by family and size, e.g. ``ModelSpec("vit", depth=6, width=128)``.

    ``family`` is one of :data:`~tucker_init.models.FAMILIES` or a timm model name (then depth and
    width must be ``None``); ``depth`` / ``width`` ``None`` take the family's default; ``patch_size``
    ``None`` (timm names) keeps the model's own.

    Raises:
        ValueError: a size that is not a positive int (0 is not "the default").
    """

    family: str = "vit"
    depth: int | None = 6
    width: int | None = 128
    num_classes: int = 10
    img_size: int = 32
    patch_size: int | None = 4

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(f"family must be a model family or timm model name, found {self.family!r}")
        check_size("depth", self.depth, allow_none=True)
        check_size("width", self.width, allow_none=True)
        check_size("num_classes", self.num_classes)
        check_size("img_size", self.img_size)
        check_size("patch_size", self.patch_size, allow_none=True)

    def _sizes(self) -> dict[str, int | None]:
        return {
            "depth": self.depth,
            "width": self.width,
            "num_classes": self.num_classes,
            "img_size": self.img_size,
            "patch_size": self.patch_size,
        }

    def build(self, **kwargs: Any) -> nn.Module:
        """A freshly initialized model of this spec; ``kwargs`` go to the model's constructor
        (e.g. ``drop_path_rate=0.1``: options of training that are not part of the architecture)."""
        return create_model(self.family, **self._sizes(), **kwargs)

    def timm_equivalent(self) -> tuple[str, dict[str, Any]]:
        """The timm model name and kwargs that build this architecture (:func:`timm_equivalent`)."""
        return timm_equivalent(self.family, **self._sizes())

    @property
    def name(self) -> str:
        if self.depth is None or self.width is None:
            return self.family
        return f"{self.family}-{size_name(self.depth, self.width)}"

    def with_size(self, depth: int, width: int) -> ModelSpec:
        return ModelSpec(self.family, depth, width, self.num_classes, self.img_size, self.patch_size)
