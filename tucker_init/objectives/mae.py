"""Masked image modeling objectives for dense and factorized encoders (SWEET pre-training).

Two objectives share one interface, ``model(images, generator) -> MaskedOutput``:

- :class:`MaskedAutoencoder`: MAE (He et al. 2022, ``models_mae.py``) around a timm
  ``VisionTransformer``. The encoder sees only the visible patch tokens; a small dense
  decoder fills in mask tokens and predicts the pixels of every patch.
- :class:`MaskedConvAutoencoder`: the masked-input variant for encoders that give a feature map
  (timm ResNet / ConvNeXt, and Swin, whose windows cannot drop tokens either): masked patches of
  the input are set to zero, the encoder runs ``forward_features`` on the whole image and a
  light decoder predicts each patch's pixels.

Both take a dense timm model or a :class:`~tucker_init.templates.factorized.FactorizedModel` wrapping
one. For a factorized encoder the encoder pass runs through ``fm.call`` so the templated
weights are reconstructed once per step, and the same training loop serves a dense MAE
baseline. :func:`masked_model_for` picks the objective by backbone family.

Notation: B images, C channels, H x W pixels, p x p patches (``ph x pw``), N = (H/p)(W/p)
patches, D encoder width, K = round((1 - mask_ratio) * N) visible patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter

from ..templates.factorized import FactorizedModel
from ..validation import as_int

__all__ = [
    "MaskedAutoencoder",
    "MaskedConvAutoencoder",
    "MaskedOutput",
    "masked_model_for",
    "patchify",
    "random_masking",
    "sincos_pos_embed_2d",
    "unpatchify",
]

VIT_FAMILIES = ("vit",)
# forward_features layouts (BackboneAdapter.features_layout) of a feature map: CNNs, Swin.
MAP_LAYOUTS = ("NCHW", "NHWC")
POS_EMBEDS = ("sincos", "learned")


@dataclass
class MaskedOutput:
    """Result of a masked-modeling step.

    Attributes:
        loss: scalar, mean squared error over the masked patches only.
        pred: ``(B, N, ph*pw*C)`` predicted pixels of every patch (visible ones included;
            they are not scored).
        mask: ``(B, N)`` with 1 = masked (scored), 0 = visible.
    """

    loss: Tensor
    pred: Tensor
    mask: Tensor


# -- shared pieces ----------------------------------------------------------------------------------
def patchify(images: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, N, ph*pw*C)``, patches in row-major grid order (the order of
    timm's patch tokens), pixels ordered ``(ph, pw, C)`` as in MAE."""
    B, C, H, W = images.shape
    ph, pw = patch_size
    h, w = H // ph, W // pw
    x = images.reshape(B, C, h, ph, w, pw)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(B, h * w, ph * pw * C)


def unpatchify(patches: Tensor, patch_size: tuple[int, int], grid: tuple[int, int], channels: int) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, N, ph*pw*C)`` -> ``(B, C, H, W)``."""
    B = patches.shape[0]
    ph, pw = patch_size
    h, w = grid
    x = patches.reshape(B, h, w, ph, pw, channels)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(B, channels, h * ph, w * pw)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """K = round((1 - mask_ratio) * N), kept in [1, N - 1] so that both the encoder input and
    the loss are non-empty."""
    return min(max(round((1.0 - mask_ratio) * num_patches), 1), num_patches - 1)


def random_masking(
    batch: int, num_patches: int, mask_ratio: float, device: torch.device, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking by sorting uniform noise (MAE).

    Returns:
        ``ids_keep (B, K)`` indices of the visible patches, ``ids_restore (B, N)`` which undoes
        the shuffle, ``mask (B, N)`` with 1 = masked.
    """
    if num_patches < 2:
        raise ValueError(
            f"masking needs at least 2 patches per image (one visible, one masked), found {num_patches}; "
            "use larger images or a smaller patch_size"
        )
    keep = num_visible(num_patches, mask_ratio)
    # Noise is drawn on the generator's device so a CPU generator works for CUDA images too.
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, num_patches, generator=generator, device=noise_device).to(device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)
    return ids_keep, ids_restore, mask


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2D sin-cos position embedding of MAE, ``(h*w, dim)``: half the channels encode
    the row, half the column. ``dim`` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"decoder_dim must be a multiple of 4 for sin-cos position embeddings, found {dim}")
    h, w = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))  # (dim/4,)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )

    def encode(pos: Tensor) -> Tensor:  # (h*w,) -> (h*w, dim/2)
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE uses the column (w) coordinate for the first half.
    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def _check_ratio(mask_ratio: float) -> float:
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise TypeError(f"mask_ratio must be a float in (0, 1), found {type(mask_ratio).__name__}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1) (exclusive), found {mask_ratio}")
    return float(mask_ratio)


def _check_positive(name: str, value: int, minimum: int = 1) -> int:
    result = as_int(value)
    if result is None:
        raise TypeError(f"{name} must be an int, found {type(value).__name__} {value!r}")
    if result < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, found {result}")
    return result


def _split_encoder(encoder: nn.Module) -> tuple[nn.Module, BackboneAdapter]:
    """``(backbone, adapter)`` of a dense timm model or a FactorizedModel wrapping one."""
    if isinstance(encoder, FactorizedModel):
        return encoder.backbone, encoder.adapter
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module, found {type(encoder).__name__}")
    return encoder, get_adapter(encoder)


class _MaskedBase(nn.Module):
    """Patchify, the masked MSE loss and the dense / factorized dispatch."""

    encoder: nn.Module
    patch_size: tuple[int, int]
    in_chans: int
    norm_pix_loss: bool

    def _run_encoder(self, fn, *args: Tensor) -> Tensor:
        # A FactorizedModel reconstructs its templated weights once here, then runs fn on them.
        if isinstance(self.encoder, FactorizedModel):
            return self.encoder.call(fn, *args)
        return fn(self.encoder, *args)

    def _check_images(self, images: Tensor) -> tuple[int, int]:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != self.in_chans:
            found = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must have shape (B, {self.in_chans}, H, W), found {found}")
        if not images.is_floating_point():
            raise TypeError(f"images must be normalized floats, found dtype {images.dtype}")
        H, W = images.shape[-2:]
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ValueError(
                f"images of size {H}x{W} are not divisible into {ph}x{pw} patches; "
                f"use a size that is a multiple of the patch size"
            )
        return H // ph, W // pw

    def target(self, images: Tensor) -> Tensor:
        """Regression target ``(B, N, ph*pw*C)``: patch pixels, per-patch normalized (zero mean,
        unit variance) when ``norm_pix_loss``."""
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean over masked patches of the per-patch MSE; visible patches do not count.

        Args:
            images: ``(B, C, H, W)``. pred: ``(B, N, ph*pw*C)``. mask: ``(B, N)``, 1 = masked.
        """
        per_patch = (pred - self.target(images)).pow(2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum()


# -- ViT: MAE -----------------------------------------------------------------------------------------------
def _prefix_tokens(vit: VisionTransformer) -> list[Tensor]:
    """cls, dist (DeiT-distilled) and register tokens, in timm's order, each ``(1, n, D)``."""
    tokens = [getattr(vit, name, None) for name in ("cls_token", "dist_token", "reg_token")]
    return [t for t in tokens if t is not None]


def _encode(vit: VisionTransformer, images: Tensor, ids_keep: Tensor) -> Tensor:
    """The MAE encoder pass, written against the backbone so it can run under ``fm.call``.

    Args:
        vit: a timm ``VisionTransformer`` (its weights may be reconstructed ones).
        images: ``(B, C, H, W)``.
        ids_keep: ``(B, K)`` indices of the visible patches.

    Returns:
        ``(B, P + K, D)``: P prefix tokens (cls, dist, registers) then the visible patches,
        after the final norm.
    """
    x = vit.patch_embed(images)
    if x.ndim == 4:  # dynamic_img_size gives (B, h, w, D); the caller checked the grid size
        x = x.flatten(1, 2)
    B, _, D = x.shape
    prefix = [t.expand(B, -1, -1) for t in _prefix_tokens(vit)]
    num_prefix = sum(t.shape[1] for t in prefix)

    if vit.pos_embed is not None:
        # timm keeps prefix positions in pos_embed unless no_embed_class; either way the patch
        # positions are added *before* dropping tokens, so each token keeps its own position.
        prefix_pos = 0 if vit.no_embed_class else num_prefix
        pos = vit.pos_embed
        x = x + pos[:, prefix_pos:]
        if prefix_pos and prefix:
            prefix_embed = torch.cat(prefix, dim=1) + pos[:, :prefix_pos]
            prefix = [prefix_embed]
    x = x.gather(1, ids_keep[..., None].expand(-1, -1, D))  # (B, K, D)
    if prefix:
        x = torch.cat([*prefix, x], dim=1)
    # vit.patch_drop (PatchDropout) is skipped on purpose: the MAE mask already drops tokens.
    x = vit.pos_drop(x)
    x = vit.norm_pre(x)
    x = vit.blocks(x)
    return vit.norm(x)


class _ViTDecoder(nn.Module):
    """MAE decoder: embed, mask tokens, position embedding, ``depth`` timm Blocks, pixel head."""

    def __init__(
        self,
        encoder_dim: int,
        num_prefix: int,
        grid: tuple[int, int],
        patch_dim: int,
        dim: int,
        depth: int,
        heads: int,
        pos_embed: str,
    ) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        table = torch.zeros(1, num_prefix + grid[0] * grid[1], dim)
        if pos_embed == "sincos":
            table[0, num_prefix:] = sincos_pos_embed_2d(dim, grid)  # prefix positions stay 0, as in MAE
            self.register_buffer("pos_embed", table)
        else:
            self.pos_embed = nn.Parameter(table)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """``(B, P + K, D)`` and ``ids_restore (B, N)`` -> pixel predictions ``(B, N, patch_dim)``."""
        x = self.embed(latent)
        B, N = ids_restore.shape
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix :]
        masked = self.mask_token.expand(B, N - visible.shape[1], -1)
        full = torch.cat([visible, masked], dim=1)  # shuffled order
        full = full.gather(1, ids_restore[..., None].expand(-1, -1, full.shape[-1]))  # grid order
        x = torch.cat([prefix, full], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.pred(x[:, self.num_prefix :])


class MaskedAutoencoder(_MaskedBase):
    """MAE (He et al. 2022) around a timm ``VisionTransformer`` encoder, dense or factorized.

    Each step: patchify; mask a random ``mask_ratio`` of the N patches per sample; run the
    encoder on the K visible patch tokens (plus cls / register tokens; position embeddings
    follow timm's layout, with or without prefix positions); a small dense decoder
    (``decoder_depth`` timm Blocks of width ``decoder_dim``) inserts mask tokens, adds its own
    position embedding (fixed 2D sin-cos or learned) and predicts the pixels of each patch;
    the loss is the MSE over masked patches only, against per-patch normalized pixels when
    ``norm_pix_loss``. The encoder's classifier head is not used.

    Args:
        encoder: a timm ``VisionTransformer`` or a ``FactorizedModel`` whose backbone is one.
        mask_ratio: fraction of patches masked, in (0, 1).
        decoder_dim: decoder width (a multiple of ``decoder_heads``; of 4 for sin-cos).
        decoder_depth: number of decoder blocks (0 allowed: a linear decoder).
        decoder_heads: attention heads of the decoder.
        norm_pix_loss: regress per-patch normalized pixels (MAE's better setting).
        decoder_pos_embed: ``"sincos"`` (fixed, MAE) or ``"learned"``.

    Example::

        mae = MaskedAutoencoder(factorize(vit, ranks=(8, 32, 32)))
        out = mae(images)                 # images (B, 3, H, W)
        out.loss.backward()
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = False,
        decoder_pos_embed: str = "sincos",
    ) -> None:
        super().__init__()
        vit, adapter = _split_encoder(encoder)
        if not isinstance(vit, VisionTransformer):
            raise ValueError(
                f"MaskedAutoencoder needs a timm VisionTransformer encoder (or a FactorizedModel of one), "
                f"found {type(vit).__name__} (family {adapter.family!r}); use MaskedConvAutoencoder or "
                "masked_model_for() for CNNs and Swin"
            )
        self.mask_ratio = _check_ratio(mask_ratio)
        _check_positive("decoder_dim", decoder_dim)
        _check_positive("decoder_depth", decoder_depth, minimum=0)
        _check_positive("decoder_heads", decoder_heads)
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim must be a multiple of decoder_heads={decoder_heads}, found {decoder_dim}")
        if decoder_pos_embed not in POS_EMBEDS:
            raise ValueError(f"decoder_pos_embed must be one of {list(POS_EMBEDS)}, found {decoder_pos_embed!r}")
        if decoder_pos_embed == "sincos" and decoder_dim % 4:
            raise ValueError(
                f"decoder_dim must be a multiple of 4 with decoder_pos_embed='sincos', found {decoder_dim}"
            )
        if not isinstance(norm_pix_loss, bool):
            raise TypeError(f"norm_pix_loss must be a bool, found {type(norm_pix_loss).__name__}")

        self.encoder = encoder
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = tuple(vit.patch_embed.patch_size)
        self.in_chans = vit.patch_embed.proj.in_channels
        self.grid = tuple(vit.patch_embed.grid_size)
        num_prefix = sum(t.shape[1] for t in _prefix_tokens(vit))
        patch_dim = self.patch_size[0] * self.patch_size[1] * self.in_chans
        self.decoder = _ViTDecoder(
            vit.embed_dim,
            num_prefix,
            self.grid,
            patch_dim,
            decoder_dim,
            decoder_depth,
            decoder_heads,
            decoder_pos_embed,
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> MaskedOutput:
        """One masked-modeling step.

        Args:
            images: ``(B, C, H, W)`` normalized floats, H x W the encoder's image size.
            generator: draws the masks (reproducible masks for a fixed generator state).

        Returns:
            :class:`MaskedOutput` with ``loss`` (scalar), ``pred (B, N, ph*pw*C)``, ``mask (B, N)``.
        """
        grid = self._check_images(images)
        if grid != self.grid:
            raise ValueError(
                f"images give a {grid[0]}x{grid[1]} patch grid, the decoder was built for "
                f"{self.grid[0]}x{self.grid[1]} (encoder img_size); resize the images"
            )
        B, N = images.shape[0], grid[0] * grid[1]
        ids_keep, ids_restore, mask = random_masking(B, N, self.mask_ratio, images.device, generator)
        latent = self._run_encoder(_encode, images, ids_keep)  # (B, P + K, D)
        pred = self.decoder(latent, ids_restore)
        return MaskedOutput(self.loss(images, pred, mask), pred, mask)


# -- CNN, Swin: masked input ---------------------------------------------------------------------------------
def _forward_features(model: nn.Module, images: Tensor) -> Tensor:
    return model.forward_features(images)


class MaskedConvAutoencoder(_MaskedBase):
    """Masked-input image modeling for encoders that give a feature map, dense or factorized:
    timm ResNet / ConvNeXt (``(B, F, H/s, W/s)``) and Swin (``(B, H/s, W/s, F)``, permuted here),
    i.e. every backbone whose adapter's ``features_layout`` is ``"NCHW"`` or ``"NHWC"``.

    A CNN cannot drop tokens (nor can Swin's windows), so masked patches of the input are set
    to 0 (the mean of normalized images) and the encoder runs ``forward_features`` on the whole
    image, giving ``(B, F, H/s, W/s)`` at total stride s. A light decoder predicts the pixels of
    every ``p x p`` patch: a 1x1 conv to ``decoder_dim * (s/p)^2`` channels and a
    pixel-shuffle up to the patch grid (or an average pool down when p > s), then
    ``decoder_depth`` 3x3 conv + GELU layers and a 1x1 conv to ``p*p*C`` pixels. The loss is
    the MSE over masked patches only.

    Args:
        encoder: a timm ``ResNet`` / ``ConvNeXt`` / ``SwinTransformer`` or a ``FactorizedModel`` of one.
        mask_ratio: fraction of patches masked, in (0, 1).
        patch_size: side of the masked patches; defaults to the encoder's total stride. It
            must divide the stride or be a multiple of it.
        decoder_dim: channels of the decoder.
        decoder_depth: number of 3x3 conv layers after the upsampling (0 allowed).
        norm_pix_loss: regress per-patch normalized pixels.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        mask_ratio: float = 0.6,
        patch_size: int | None = None,
        decoder_dim: int = 128,
        decoder_depth: int = 1,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        backbone, adapter = _split_encoder(encoder)
        if adapter.features_layout not in MAP_LAYOUTS or not hasattr(backbone, "forward_features"):
            raise ValueError(
                "MaskedConvAutoencoder needs a timm ResNet or ConvNeXt (or Swin) encoder, one whose forward_features "
                f"gives a feature map (adapter features_layout in {list(MAP_LAYOUTS)}), found "
                f"{type(backbone).__name__} (family {adapter.family!r}, features_layout {adapter.features_layout!r}); "
                "use MaskedAutoencoder for ViTs"
            )
        self.mask_ratio = _check_ratio(mask_ratio)
        _check_positive("decoder_dim", decoder_dim)
        _check_positive("decoder_depth", decoder_depth, minimum=0)
        if not isinstance(norm_pix_loss, bool):
            raise TypeError(f"norm_pix_loss must be a bool, found {type(norm_pix_loss).__name__}")
        stride = int(backbone.feature_info[-1]["reduction"])
        features = int(backbone.num_features)
        patch = stride if patch_size is None else _check_positive("patch_size", patch_size)
        if stride % patch and patch % stride:
            raise ValueError(
                f"patch_size must divide the encoder's total stride {stride} or be a multiple of it, found {patch}"
            )

        self.encoder = encoder
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = (patch, patch)
        self.stride = stride
        self.channels_last = adapter.features_layout == "NHWC"
        self.in_chans = _input_channels(backbone)
        up = max(stride // patch, 1)
        layers: list[nn.Module] = [nn.Conv2d(features, decoder_dim * up * up, kernel_size=1)]
        # Pixel-shuffle turns each feature pixel into up x up patch cells with their own channels.
        layers.append(nn.PixelShuffle(up) if up > 1 else nn.Identity())
        if patch > stride:
            layers.append(nn.AvgPool2d(patch // stride))
        for _ in range(decoder_depth):
            layers += [nn.Conv2d(decoder_dim, decoder_dim, kernel_size=3, padding=1), nn.GELU()]
        layers.append(nn.Conv2d(decoder_dim, patch * patch * self.in_chans, kernel_size=1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> MaskedOutput:
        """One masked-modeling step.

        Args:
            images: ``(B, C, H, W)`` normalized floats, H and W multiples of ``patch_size``
                and of the encoder's stride.
            generator: draws the masks.

        Returns:
            :class:`MaskedOutput` with ``loss``, ``pred (B, N, p*p*C)``, ``mask (B, N)``.
        """
        h, w = self._check_images(images)
        H, W = images.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ValueError(f"images of size {H}x{W} must be multiples of the encoder's total stride {self.stride}")
        B, N = images.shape[0], h * w
        _, _, mask = random_masking(B, N, self.mask_ratio, images.device, generator)
        p = self.patch_size[0]
        pixel_mask = mask.reshape(B, 1, h, 1, w, 1).expand(B, 1, h, p, w, p).reshape(B, 1, H, W)
        # masked_fill rather than a product: masked pixels must not leak even when they hold inf / nan.
        masked = images.masked_fill(pixel_mask.bool(), 0.0)
        features = self._run_encoder(_forward_features, masked)  # (B, F, H/s, W/s); Swin: (B, H/s, W/s, F)
        if self.channels_last:
            features = features.permute(0, 3, 1, 2)
        pred = self.decoder(features)  # (B, p*p*C, h, w)
        pred = pred.flatten(2).transpose(1, 2)  # (B, N, p*p*C), row-major like patchify
        return MaskedOutput(self.loss(images, pred, mask), pred, mask)


def _input_channels(backbone: nn.Module) -> int:
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels  # the first conv is the stem
    raise ValueError(f"no nn.Conv2d found in {type(backbone).__name__}; cannot tell the input channels")


def masked_model_for(encoder: nn.Module, *, image_size: int | None = None, **kwargs) -> nn.Module:
    """The masked-modeling objective that fits ``encoder``'s backbone family.

    ViTs get :class:`MaskedAutoencoder`; encoders whose adapter gives a feature map
    (``features_layout`` ``"NCHW"``: ResNet, ConvNeXt; ``"NHWC"``: Swin) get
    :class:`MaskedConvAutoencoder`. ``encoder`` may be dense or a ``FactorizedModel``; ``kwargs``
    go to the constructor. With ``image_size`` and no ``patch_size``, a feature-map encoder masks
    patches of a quarter of the image side (8 px at 32 px, 16 patches): its default, the total
    stride (32 for a ResNet, 16 for tucker_init's Swin at 32 px), would leave one to four patches.
    """
    backbone, adapter = _split_encoder(encoder)
    if adapter.family in VIT_FAMILIES or isinstance(backbone, VisionTransformer):
        return MaskedAutoencoder(encoder, **kwargs)
    if adapter.features_layout in MAP_LAYOUTS:
        if image_size is not None and "patch_size" not in kwargs:
            kwargs["patch_size"] = max(1, image_size // 4)
        return MaskedConvAutoencoder(encoder, **kwargs)
    raise ValueError(
        f"no masked-modeling objective for backbone family {adapter.family!r} (forward_features layout "
        f"{adapter.features_layout!r}); supported: ViTs (family 'vit') and feature-map encoders (layouts "
        f"{list(MAP_LAYOUTS)}: resnet, convnext, swin)"
    )
