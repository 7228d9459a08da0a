"""One contract over a zoo of timm configurations, in the spirit of timm's tests/test_models.py.

Every configuration is a real timm model (``timm.create_model`` with the family's own
options, shrunk by its keyword arguments: depth 2 or a few blocks per stage, small widths,
32 px images) with :func:`perturb`-ed weights so that every parameter matters (layer scales,
GRN, BN statistics, norm affines). For each, ``factorize(model, ranks="full")``

* is lossless: the logits, and every tensor of ``materialize()``'s state dict, equal the
  model's up to round-off relative to their scale (``OUTPUT_RTOL`` / ``RTOL`` of tests/_models.py);
* leaves the input model alone: its state dict bit for bit, its parameter list, no gradients;
* materializes to a model of the same class that computes the same logits.

Kronecker templates at full rank (k = a*b) are lossless on a ViT and on CNNs as well, and
families without an adapter raise a ValueError that points to ``GenericAdapter``. Swin, Eva
(EVA-02, RoPE ViTs) and BEiT have native adapters that ``get_adapter`` finds by the model's class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import timm
import torch
from _models import OUTPUT_RTOL, assert_close_rel, perturb
from torch import nn

from backbones import get_adapter
from tucker_init import factorize

IMG = 32
# A ViT at 32 px with 8 px patches (a 4x4 grid), 2 blocks of width 64 (2 heads of 64).
VIT_SMALL = {"img_size": IMG, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
# ResNet stages at a quarter of the usual width (the plain stem keeps its 64 channels).
RESNET_SMALL = {"channels": (16, 32, 64, 128)}
CONVNEXT_SMALL = {"depths": (1, 1, 2, 1), "dims": (16, 32, 48, 64)}
# Swin at 32 px with 4 px patches (an 8x8 grid), windows of 4 (stages 3 and 4 clip them to their
# 2x2 and 1x1 grids), 2 blocks per stage of widths 16..128 (heads of 16).
SWIN_SMALL = {"img_size": IMG, "window_size": 4, "embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8)}
# EVA-02 keeps its 14 px patches: 28 px images are a 2x2 grid.
EVA_IMG = 28


@dataclass(frozen=True)
class Config:
    """A timm model name, the keyword arguments that shrink it, what makes it this configuration
    (``feature``, checked on the built model) and whether it is a single group (``share``)."""

    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    feature: Callable[[nn.Module], bool] = lambda m: True
    share: bool = False  # one core for all groups: the single-group ViTs
    img_size: int = IMG

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        model = timm.create_model(self.model, pretrained=False, num_classes=10, **self.kwargs)
        return perturb(model, seed).eval()


def vit(model: str, feature: Callable[[nn.Module], bool] = lambda m: True, **kwargs) -> Config:
    return Config(model, VIT_SMALL | kwargs, feature, share=True)


def resnet(model: str, feature: Callable[[nn.Module], bool], **kwargs) -> Config:
    return Config(model, RESNET_SMALL | kwargs, feature)


def convnext(model: str, feature: Callable[[nn.Module], bool]) -> Config:
    return Config(model, CONVNEXT_SMALL, feature)


def swin(model: str, feature: Callable[[nn.Module], bool], **kwargs) -> Config:
    """A Swin configuration; a keyword set to None drops SWIN_SMALL's value (the model's own stays)."""
    kwargs = {k: v for k, v in (SWIN_SMALL | kwargs).items() if v is not None}
    return Config(model, kwargs, feature, img_size=kwargs["img_size"])


def eva(model: str, feature: Callable[[nn.Module], bool], **kwargs) -> Config:
    return Config(model, {"depth": 2} | kwargs, feature, share=True, img_size=kwargs.get("img_size", IMG))


def block(m: nn.Module) -> nn.Module:
    return m.blocks[0]


def blocks(m: nn.Module, stage: int = 1) -> tuple[str, ...]:
    return tuple(type(b).__name__ for b in getattr(m, f"layer{stage}"))


def depths(m: nn.Module) -> tuple[int, ...]:
    return tuple(len(getattr(m, f"layer{i}")) for i in range(1, 5))


ZOO: dict[str, Config] = {
    # -- ViT family (timm VisionTransformer and its subclasses): one group of 2 blocks
    "vit_mlp_ratio_2": vit("vit_tiny_patch16_224", lambda m: block(m).mlp.fc1.out_features == 128, mlp_ratio=2.0),
    "vit_mlp_ratio_3": vit("vit_small_patch16_224", lambda m: block(m).mlp.fc1.out_features == 192, mlp_ratio=3.0),
    "vit_avg_pool_no_cls": vit(
        "vit_tiny_patch16_224",
        lambda m: m.cls_token is None and m.global_pool == "avg",
        class_token=False,
        global_pool="avg",
    ),
    "vit_reg_tokens": vit(  # register tokens, no class token, position embedding on patches only
        "vit_base_patch16_reg4_gap_256",
        lambda m: m.num_reg_tokens == 4 and m.cls_token is None and m.no_embed_class,
        reg_tokens=4,
    ),
    "vit_layer_scale": vit(
        "vit_tiny_patch16_224", lambda m: type(block(m).ls1).__name__ == "LayerScale", init_values=1e-5
    ),
    "vit_qk_norm": vit("vit_tiny_patch16_224", lambda m: isinstance(block(m).attn.q_norm, nn.LayerNorm), qk_norm=True),
    "vit_map_pool": vit("vit_tiny_patch16_224", lambda m: m.attn_pool is not None, global_pool="map"),
    "vit_pre_norm_no_qkv_bias": vit(
        "vit_tiny_patch16_224",
        lambda m: isinstance(m.norm_pre, nn.LayerNorm) and block(m).attn.qkv.bias is None,
        pre_norm=True,
        qkv_bias=False,
    ),
    "deit": vit("deit_tiny_patch16_224"),
    "deit_distilled": vit("deit_tiny_distilled_patch16_224", lambda m: m.dist_token is not None),
    "deit3": vit(  # layer scale (1e-6, perturbed) and no position embedding on the class token
        "deit3_small_patch16_224", lambda m: m.no_embed_class and type(block(m).ls1).__name__ == "LayerScale"
    ),
    "flexivit": vit("flexivit_small", lambda m: m.no_embed_class),
    # -- ResNet family: the same block types and layer counts, stages at a quarter width
    "resnet18": resnet("resnet18", lambda m: depths(m) == (2, 2, 2, 2) and blocks(m)[0] == "BasicBlock"),
    "resnet26": resnet("resnet26", lambda m: depths(m) == (2, 2, 2, 2) and blocks(m)[0] == "Bottleneck"),
    "resnet34": resnet("resnet34", lambda m: depths(m) == (3, 4, 6, 3) and blocks(m)[0] == "BasicBlock"),
    "resnet50": resnet("resnet50", lambda m: depths(m) == (3, 4, 6, 3) and blocks(m)[0] == "Bottleneck"),
    "seresnet18": resnet("seresnet18", lambda m: type(m.layer1[0].se).__name__ == "SEModule"),
    "seresnet50": resnet(
        "seresnet50",
        lambda m: type(m.layer1[0].se).__name__ == "SEModule" and blocks(m)[0] == "Bottleneck",
        layers=(1, 2, 1, 1),
    ),
    "wide_resnet50_2": resnet(  # bottleneck width 2 x 16 channels in the first stage
        "wide_resnet50_2", lambda m: m.layer1[0].conv1.out_channels == 32, layers=(1, 2, 2, 1)
    ),
    "resnext_grouped": Config(  # grouped 3x3 convs stay dense, the 1x1 convs are templated
        "resnext50_32x4d",
        {"channels": (32, 64, 128, 256), "layers": (1, 2, 1, 1)},
        lambda m: m.layer1[0].conv2.groups == 32,
    ),
    "resnet26d": resnet(  # deep stem and average-pool down-sampling shortcuts
        "resnet26d",
        lambda m: isinstance(m.conv1, nn.Sequential) and isinstance(m.layer2[0].downsample[0], nn.AvgPool2d),
    ),
    "resnet50d": resnet("resnet50d", lambda m: isinstance(m.conv1, nn.Sequential), layers=(2, 2, 3, 1)),
    # -- ConvNeXt family
    "convnext_linear_mlp": convnext("convnext_tiny", lambda m: isinstance(block(m.stages[0]).mlp.fc1, nn.Linear)),
    "convnext_conv_mlp": convnext("convnext_atto", lambda m: isinstance(block(m.stages[0]).mlp.fc1, nn.Conv2d)),
    "convnextv2": convnext(  # global response norm (zero at init, perturbed), no layer scale
        "convnextv2_atto", lambda m: hasattr(block(m.stages[0]).mlp, "grn") and block(m.stages[0]).gamma is None
    ),
    # -- Swin: one group per stage, relative position bias tables and patch merging dense
    "swin": swin(
        "swin_tiny_patch4_window7_224",
        lambda m: (
            [b.attn.window_size for b in (s.blocks[0] for s in m.layers)] == [(4, 4), (4, 4), (2, 2), (1, 1)]
            and m.layers[0].blocks[1].attn_mask is not None
        ),  # shifted windows in stage 1
    ),
    "swin_s3_window_per_stage": swin(  # AutoFormerV2: windows of 7, 7, 14, 7 clipped to 16, 8, 4, 2 px grids
        "swin_s3_tiny_224",
        lambda m: m.layers[0].blocks[0].attn.window_size == (7, 7) and m.layers[2].blocks[0].attn.window_size == (4, 4),
        img_size=64,
        window_size=None,
        depths=(1, 2, 1, 1),
    ),
    # -- Eva: EVA-02 (RoPE, SwiGLU) and timm's RoPE ViTs, one group of 2 blocks
    "eva02_packed_swiglu": eva(  # GluMlp with one fc1 (1024, 192) for value and gate: d = gcd(192, 512) = 64
        "eva02_tiny_patch14_224",
        lambda m: type(block(m).mlp).__name__ == "GluMlp" and block(m).mlp.fc1.out_features == 1024,
        img_size=EVA_IMG,
    ),
    "eva02_swiglu_separate_qkv": eva(  # q/k/v projections, fc1_g / fc1_x and a LayerNorm on the hidden units
        "eva02_base_patch14_224",
        lambda m: block(m).attn.qkv is None and isinstance(block(m).mlp.norm, nn.LayerNorm),
        img_size=EVA_IMG,
        embed_dim=64,
        num_heads=2,
        mlp_ratio=2.0,
    ),
    "vit_rope_mixed": eva(  # learned RoPE frequencies rope.freqs (depth, 2, heads, head_dim / 4), layer scale
        "vit_small_patch16_rope_mixed_224",
        lambda m: type(m.rope).__name__ == "RotaryEmbeddingMixed" and block(m).gamma_1 is not None,
        img_size=IMG,
        patch_size=8,
        embed_dim=64,
        num_heads=2,
    ),
    "vit_rope_reg_token": eva(
        "vit_base_patch16_rope_reg1_gap_256",
        lambda m: m.reg_token.shape[1] == 1 and m.cls_token is None and m.pos_embed is None,
        img_size=IMG,
        patch_size=8,
        embed_dim=64,
        num_heads=2,
    ),
    # -- BEiT: q / v biases, layer scale, relative position bias per block or shared
    "beit": vit(
        "beit_base_patch16_224",
        lambda m: block(m).attn.relative_position_bias_table is not None and block(m).gamma_1 is not None,
    ),
    "beit_shared_rel_pos": vit(
        "beit_base_patch16_224",
        lambda m: m.rel_pos_bias is not None and block(m).attn.relative_position_bias_table is None,
        use_rel_pos_bias=False,
        use_shared_rel_pos_bias=True,
    ),
}

# The native adapter each of these configurations gets from ``get_adapter``.
NATIVE = {
    "swin": "swin",
    "swin_s3_window_per_stage": "swin",
    "eva02_packed_swiglu": "eva",
    "eva02_swiglu_separate_qkv": "eva",
    "vit_rope_mixed": "eva",
    "vit_rope_reg_token": "eva",
    "beit": "beit",
    "beit_shared_rel_pos": "beit",
}

# Full-rank Kronecker templates: k = a * b templates of a x b (every unit width of these is a
# multiple of 4: 64 for the ViTs, EVA-02 and BEiT, 16 and more for the ResNets, the ConvNeXt and Swin).
KRONECKER = ["vit_mlp_ratio_2", "deit3", "resnet18", "resnet50d", "convnextv2", "swin", "eva02_packed_swiglu", "beit"]
KRONECKER_FULL = (16, 4, 4)

NO_ADAPTER: dict[str, Callable[[], nn.Module]] = {
    "efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=10),
    "regnetx_002": lambda: timm.create_model("regnetx_002", num_classes=10),
    "mobilenetv3_small_050": lambda: timm.create_model("mobilenetv3_small_050", num_classes=10),
}


def images(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))


def assert_lossless(fm: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    """Same logits, and a materialized model of the same class with the same state and logits."""
    dtype = x.dtype
    with torch.no_grad():
        expected = model(x)
        assert_close_rel(fm(x), expected, OUTPUT_RTOL[dtype], msg="factorized logits")
    dense = fm.materialize().eval()
    assert type(dense) is type(model)
    original, rebuilt = model.state_dict(), dense.state_dict()
    assert list(rebuilt) == list(original)
    for key, value in original.items():
        assert_close_rel(rebuilt[key], value, msg=key)  # RTOL of the dtype; integer buffers exact
    with torch.no_grad():
        assert_close_rel(dense(x), expected, OUTPUT_RTOL[dtype], msg="materialized logits")


@pytest.mark.parametrize("name", list(ZOO))
def test_full_rank_tucker_contract(name):
    config = ZOO[name]
    model = config.build()
    assert config.feature(model), f"{name} lacks the feature it stands for"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names_before = [n for n, _ in model.named_parameters()]
    x = images(config.img_size)

    fm = factorize(model, ranks="full", share=config.share).eval()
    groups = len(fm.layout.groups)
    assert groups == 1 if config.share else groups > 1, groups  # one ViT group; CNN stages
    assert_lossless(fm, model, x)
    # A training step of the factorized model (BN statistics move) reaches neither the input
    # model's state nor its gradients.
    fm.train()(x).logsumexp(-1).sum().backward()
    assert [n for n, _ in model.named_parameters()] == names_before
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", KRONECKER)
def test_full_rank_kronecker_is_lossless(name):
    config = ZOO[name]
    model = config.build()
    fm = factorize(model, ranks=KRONECKER_FULL, method="kronecker", share=config.share).eval()
    assert_lossless(fm, model, images(config.img_size))


@pytest.mark.parametrize("name", list(NO_ADAPTER))
def test_family_without_adapter_points_to_generic_adapter(name):
    model = NO_ADAPTER[name]().eval()
    with torch.no_grad():  # a working model of the family, only not one the adapters know
        assert model(images(32)).shape == (2, 10)
    with pytest.raises(ValueError, match="GenericAdapter"):
        factorize(model, ranks="full")


@pytest.mark.parametrize("name", list(NATIVE))
def test_native_adapter_and_its_facts(name):
    model = ZOO[name].build()
    adapter = get_adapter(model)
    assert adapter.family == NATIVE[name]
    facts = adapter.describe(model)
    if adapter.family == "swin":
        stages = [s.blocks[0] for s in model.layers]
        assert facts["depths"] == [len(s.blocks) for s in model.layers]
        assert facts["embed_dims"] == [16, 32, 64, 128]
        assert facts["head_dims"] == [16] * 4 and adapter.width_multiple(model) == 16
        assert facts["window_sizes"] == [list(b.attn.window_size) for b in stages]
    else:
        assert facts["depth"] == 2 and facts["embed_dim"] == model.embed_dim
        assert facts["head_dim"] * facts["num_heads"] == model.embed_dim
        assert adapter.width_multiple(model) == facts["head_dim"]
