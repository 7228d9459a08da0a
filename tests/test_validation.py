"""Every bad input to factorize() gets a clear error before any decomposition runs."""

from __future__ import annotations

import math

import pytest
import torch
from _models import build
from torch import nn

from backbones import GenericAdapter, get_adapter
from tucker_init import factorize


@pytest.fixture(scope="module")
def vit():
    return build("vit")  # one group (24, 64, 64)


@pytest.mark.parametrize(
    ("ranks", "error", "match"),
    [
        ("abc", TypeError, r"ranks must be a tuple of 3 ints \(r1, r2, r3\) or 'full', found str"),
        (None, TypeError, r"ranks must be a tuple of 3 ints .* found NoneType"),
        (8, TypeError, r"found int 8"),
        ((4, 8), ValueError, r"ranks must have 3 entries \(r1, r2, r3\), found 2"),
        ((4, 8, 8, 8), ValueError, r"found 4"),
        ((4.0, 8, 8), TypeError, r"ranks\[0\] must be an int, found float 4.0"),
        ((4, True, 8), TypeError, r"ranks\[1\] must be an int, found bool"),
        ((4, 0, 8), ValueError, r"ranks\[1\] must be positive, found 0"),
        ((4, 8, -2), ValueError, r"ranks\[2\] must be positive, found -2"),
        ((25, 8, 8), ValueError, r"ranks\[0\]=25 exceeds the maximum 24 for mode 1 \(depth"),
        ((4, 65, 8), ValueError, r"ranks\[1\]=65 exceeds the maximum 64 for mode 2 \(output width"),
        ((4, 8, 100), ValueError, r"ranks\[2\]=100 exceeds the maximum 64 for mode 3 \(input width"),
    ],
)
def test_bad_tucker_ranks(vit, ranks, error, match):
    with pytest.raises(error, match=match):
        factorize(vit, ranks=ranks)


def test_shared_rank_limit_is_the_smallest_group():
    resnet = build("resnet")  # smallest group: layer1.1 with 18 slices, smallest width 16
    with pytest.raises(ValueError, match=r"ranks\[0\]=19 exceeds the maximum 18 for mode 1"):
        factorize(resnet, ranks=(19, 8, 8))
    with pytest.raises(ValueError, match=r"ranks='full' needs one template per group \(share=False\)"):
        factorize(resnet, ranks="full")


@pytest.mark.parametrize(
    ("ranks", "match"),
    [
        (
            (4, 3, 4),
            r"template size a=3 does not divide the width d=64 of group 'blocks\[0:2\]'; "
            r"sizes that divide every group: \[1, 2, 4, 8, 16, 32, 64\]",
        ),
        ((4, 4, 5), r"template size b=5 does not divide"),
        ((17, 4, 4), r"ranks\[0\]: number of templates k allows at most a\*b = 16, found 17"),
        ("full", r"ranks='full' is only defined for method='tucker'"),
    ],
)
def test_bad_kronecker_ranks(vit, ranks, match):
    with pytest.raises(ValueError, match=match):
        factorize(vit, ranks=ranks, method="kronecker")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "cp"}, ValueError, r"method must be one of \['tucker', 'kronecker'\], found 'cp'"),
        ({"init": "svd"}, ValueError, r"init must be one of \['hosvd', 'random'\], found 'svd'"),
        ({"kron_sharing": "none"}, ValueError, r"kron_sharing must be one of \['all', 'component'\]"),
        ({"share": "yes"}, TypeError, r"share must be a bool, found str"),
        ({"adapter": 3}, TypeError, r"adapter must be a BackboneAdapter, a family name or None, found int"),
        ({"adapter": "mamba"}, ValueError, r"unknown adapter family 'mamba'; registered: "),
        ({"adapter": "swin"}, ValueError, r"adapter family 'swin' \(timm SwinTransformer .*\) does not match"),
    ],
)
def test_bad_options(vit, kwargs, error, match):
    with pytest.raises(error, match=match):
        factorize(vit, ranks=(2, 4, 4), **kwargs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_named(bad):
    model = build("vit")
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight[0, 3] = bad
    with pytest.raises(ValueError, match=r"parameter 'blocks.1.mlp.fc2.weight' holds 1 non-finite value"):
        factorize(model, ranks=(2, 4, 4))


def test_not_a_module():
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, found dict"):
        factorize({}, ranks=(2, 4, 4))


def test_unknown_model_lists_families_and_how_to_adapt():
    with pytest.raises(
        ValueError,
        match=r"no backbone adapter for Sequential\. Supported families: vit.*resnet.*"
        r"convnext.*GenericAdapter\(block_containers=",
    ):
        get_adapter(nn.Sequential(nn.Linear(4, 4)))


def test_generic_adapter_errors():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(TypeError, match=r"block_containers must be a list of module paths"):
        GenericAdapter("blocks")
    with pytest.raises(ValueError, match=r"block_containers must name at least one block container"):
        GenericAdapter([])
    with pytest.raises(ValueError, match=r"block container\(s\) \['blocks'\] not found in Sequential"):
        factorize(model, ranks=(1, 1, 1), adapter=GenericAdapter(["blocks"]))
    with pytest.raises(ValueError, match=r"found no templated weights in Sequential"):
        factorize(nn.Sequential(nn.Sequential(nn.ReLU())), ranks=(1, 1, 1), adapter=GenericAdapter(["0"]))


def test_initialize_needs_a_module(vit):
    from tucker_init import initialize

    with pytest.raises(TypeError, match=r"target_model must be a torch.nn.Module, found dict"):
        initialize({}, factorize(vit, ranks=(2, 4, 4)))
