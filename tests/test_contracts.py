"""Contracts over the registries, in the spirit of timm's tests/test_models.py: every entry of
``list_initializers()`` and every family of ``backbones.list_adapters()`` is tested by the same
checks, so that a newly registered one is covered (or fails until it is given a case here).

Initializers, on a small ViT and a small ResNet: the target comes back in place, of its class,
with plain finite parameters; the report covers every tensor of its state, in order; a seeded
call is deterministic; the source is left alone.

Adapters, on a small model of each family: the registry finds the adapter for it; the layout
covers exactly the weights the adapter templates and cuts them losslessly; a full-rank Tucker
template is lossless; a template file round-trips; initialize() at the template's own size
gives the materialized model; a deeper model under depth ``identity`` computes the same function.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import timm
import torch
from _models import OUTPUT_RTOL, assert_close_rel, perturb, tiny_convnext, tiny_resnet, tiny_vit
from torch import Tensor, nn

from backbones import get_adapter, list_adapters
from tucker_init import (
    FactorizedModel,
    InitReport,
    WeightTemplate,
    build_layout,
    factorize,
    get_initializer,
    initialize,
    list_initializers,
    load_template,
    save_template,
)
from tucker_init.resize.report import SOURCES, init_state


def images(size: int = 32, n: int = 4) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def built(make: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return perturb(make(), seed).eval()


# ------------------------------------------------------------------------------- initializers
@dataclass(frozen=True)
class Sources:
    """What the initializers of one family start from: a larger dense model, a dense model of the
    target's size, a Tucker template and a Kronecker factorized model (of the larger one)."""

    target: Callable[[], nn.Module]
    dense: nn.Module
    same: nn.Module
    tucker: WeightTemplate
    kronecker: FactorizedModel


def _vit_sources() -> Sources:
    dense = built(lambda: tiny_vit(depth=4, embed_dim=128, num_heads=2), seed=1)
    target = lambda: tiny_vit(depth=3, embed_dim=64, num_heads=1)  # noqa: E731  shallower and narrower
    tucker = WeightTemplate.from_model(factorize(dense, ranks=(8, 32, 32)))
    kronecker = factorize(dense, ranks=(8, 8, 8), method="kronecker")
    return Sources(target, dense, built(target, seed=2), tucker, kronecker)


def _resnet_sources() -> Sources:
    dense = built(lambda: tiny_resnet(layers=(2, 2, 2, 2)), seed=1)
    target = lambda: tiny_resnet(layers=(1, 2, 1, 1))  # noqa: E731  shallower (the plain stem fixes the width)
    tucker = WeightTemplate.from_model(factorize(dense, ranks=(4, 8, 8)))
    kronecker = factorize(dense, ranks=(8, 8, 8), method="kronecker", share=False)
    return Sources(target, dense, built(target, seed=2), tucker, kronecker)


SOURCE_FAMILIES = {"vit": _vit_sources, "resnet": _resnet_sources}


def _learn() -> dict[str, Any]:
    return {"data": [(images(), torch.arange(4) % 10)], "steps": 2, "progress": False}


# Per registered initializer: its source and options. An initializer registered without an entry
# here fails test_initializer_contract: add one when registering it.
INITIALIZER_CASES: dict[str, Callable[[Sources], tuple[Any, dict[str, Any]]]] = {
    "random": lambda s: (None, {"seed": 0}),
    "weight_selection": lambda s: (s.dense, {}),
    "linear_expansion": lambda s: (s.dense, {}),
    "pretrained": lambda s: (s.same, {}),
    "tucker": lambda s: (s.tucker, {"seed": 0}),
    "tucker_learned": lambda s: (s.tucker, {"learn": _learn(), "seed": 0}),
    "kronecker": lambda s: (s.kronecker, {"learn": _learn(), "seed": 0}),
}


@pytest.fixture(scope="module", params=list(SOURCE_FAMILIES))
def sources(request) -> Sources:
    return SOURCE_FAMILIES[request.param]()


def _tensors_of(source: Any) -> dict[str, Tensor]:
    """Every tensor of a source, cloned, to check that initializing leaves it alone."""
    if source is None:
        return {}
    if isinstance(source, WeightTemplate):
        groups = {f"scalers.{i}.{k}": v for i, s in enumerate(source.scalers) for k, v in s.items()}
        return {k: v.clone() for k, v in (source.template | source.remainder | source.buffers | groups).items()}
    return {k: v.clone() for k, v in source.state_dict().items()}


def _run(name: str, sources: Sources) -> tuple[nn.Module, nn.Module, InitReport]:
    source, options = INITIALIZER_CASES[name](sources)
    target = built(sources.target, seed=5)
    out, report = get_initializer(name)(target, source, return_report=True, **options)
    return target, out, report


@pytest.mark.parametrize("name", list_initializers())
def test_initializer_contract(name, sources):
    if name not in INITIALIZER_CASES:
        pytest.fail(f"initializer {name!r} has no case in INITIALIZER_CASES: add its source and options")
    source = INITIALIZER_CASES[name](sources)[0]
    before = _tensors_of(source)
    target, out, report = _run(name, sources)
    assert out is target  # in place
    assert type(out) is type(sources.same)  # the target's class, unchanged
    assert all(type(p) is nn.Parameter for p in out.parameters())
    state = init_state(out)
    for key, value in state.items():
        assert torch.isfinite(value).all(), key
    assert isinstance(report, InitReport)
    assert list(report) == list(state)  # every parameter and float buffer, in state-dict order
    assert all(report[k] in SOURCES and report.shapes[k] == tuple(v.shape) for k, v in state.items())
    _, again, _ = _run(name, sources)  # seeded: the same result bit for bit
    for key, value in again.state_dict().items():
        assert torch.equal(value, out.state_dict()[key]), key
    after = _tensors_of(source)
    assert all(torch.equal(after[k], v) for k, v in before.items()), "the source was modified"


# ----------------------------------------------------------------------------------- adapters
@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    deeper: Callable[[], nn.Module]  # the same widths, more blocks in some sequences
    img: int = 32


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


SWIN = dict(img_size=32, window_size=4, embed_dim=16, num_heads=(1, 2, 4, 8))


# One small model per registered adapter family. A family registered without an entry here fails
# test_adapter_contract: add a builder when adding an adapter.
FAMILIES: dict[str, Family] = {
    "vit": Family(tiny_vit, lambda: tiny_vit(depth=3)),
    "resnet": Family(tiny_resnet, lambda: tiny_resnet(layers=(3, 3, 1, 1))),
    "convnext": Family(tiny_convnext, lambda: tiny_convnext(depths=(3, 1, 2, 2))),
    # 2 -> 3 blocks keeps each trained block's shift (Swin shifts every odd block).
    "swin": Family(
        _timm("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), **SWIN),
        _timm("swin_tiny_patch4_window7_224", depths=(3, 2, 3, 2), **SWIN),
    ),
    "eva": Family(
        _timm("eva02_tiny_patch14_224", img_size=28, depth=2), _timm("eva02_tiny_patch14_224", img_size=28, depth=3), 28
    ),
    "beit": Family(
        _timm("beit_base_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2),
        _timm("beit_base_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=64, num_heads=2),
    ),
}


def _family(family: str) -> Family:
    if family not in FAMILIES:
        pytest.fail(f"adapter family {family!r} has no builder in FAMILIES: add a small model of it")
    return FAMILIES[family]


def _primary_names(model: nn.Module) -> set[str]:
    """The weights inside the adapter's blocks that it marks as templated."""
    adapter = get_adapter(model)
    names = set()
    for seq in adapter.block_sequences(model):
        for block in seq.block_names:
            for module_name, module in model.get_submodule(block).named_modules():
                for param_name, _ in module.named_parameters(recurse=False):
                    if adapter.is_primary(module, param_name):
                        names.add(".".join(p for p in (block, module_name, param_name) if p))
    return names


@pytest.mark.parametrize("family", list(list_adapters()))
def test_adapter_contract(family, tmp_path):
    spec = _family(family)
    model = built(spec.build)
    adapter = get_adapter(model)
    assert adapter.family == family
    layout = build_layout(model, adapter)
    assert layout.templated_names() == _primary_names(model)
    params = dict(model.named_parameters())
    for group in layout.groups:  # the slices are a lossless re-arrangement
        for key, value in group.unstack(group.stack(params)).items():
            assert torch.equal(value, params[key]), key

    fm = factorize(model, ranks="full", share=False).eval()
    x = images(spec.img, n=2)
    with torch.no_grad():
        expected = model(x)
        assert_close_rel(fm(x), expected, OUTPUT_RTOL[torch.float32], msg="factorized logits")
    dense = fm.materialize()
    for key, value in model.state_dict().items():
        assert_close_rel(dense.state_dict()[key], value, msg=key)

    path = save_template(tmp_path / "t.safetensors", fm)
    loaded = load_template(path, model=built(spec.build, seed=3))
    assert isinstance(loaded, FactorizedModel)
    assert load_template(path).backbone == {"family": family, **adapter.describe(model)}
    reloaded = loaded.materialize().state_dict()
    for key, value in dense.state_dict().items():
        assert torch.equal(reloaded[key], value), key

    own_size = initialize(built(spec.build, seed=4), fm, depth="select", width="slice")
    for key, value in dense.state_dict().items():
        assert torch.equal(own_size.state_dict()[key], value), key

    # Depth 'identity': the new blocks of a deeper model start as the identity, so it computes the model.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every block keeps its parity (Swin's shift) and every tensor is mapped
        deeper, report = initialize(built(spec.deeper, seed=5), fm, depth="identity", return_report=True)
    assert report.counts().get("new-block", 0) > 0
    deeper.eval()
    with torch.no_grad():
        assert_close_rel(deeper(x), expected, OUTPUT_RTOL[torch.float32], msg="deeper, new blocks identity")
