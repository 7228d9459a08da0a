"""Learning a target's scalers with the masked-image loss on unlabelled images (issue 12.4)."""

from __future__ import annotations

import pytest
import torch

from tucker_init import LearnConfig, factorize, initialize
from tucker_init.pipeline import ModelSpec


@pytest.mark.parametrize(
    ("source", "target", "ranks"),
    [
        (ModelSpec("vit", 2, 128), ModelSpec("vit", 1, 64), (2, 16, 16)),
        (ModelSpec("resnetd", 2, 16, patch_size=None), ModelSpec("resnetd", 1, 16, patch_size=None), (2, 8, 8)),
    ],
)
def test_scalers_learn_from_images_alone(source, target, ranks):
    torch.manual_seed(0)
    fm = factorize(source.build(), ranks=ranks, init="random", seed=0)
    core = {k: v.clone() for k, v in fm.template.items()}
    images = [torch.randn(8, 3, 32, 32) for _ in range(3)]  # no labels
    torch.manual_seed(1)
    learned, report = initialize(
        target.build(), fm, learn=LearnConfig(data=images, steps=4, objective="mae", lr=1e-2), return_report=True
    )
    torch.manual_seed(1)
    plain = initialize(target.build(), fm)
    assert len(report.losses) == 4 and all(torch.isfinite(torch.tensor(report.losses)))
    templated = [n for n, s in report.items() if s == "template"]
    assert any(not torch.equal(learned.state_dict()[n], plain.state_dict()[n]) for n in templated)
    assert all(torch.equal(core[k], v) for k, v in fm.template.items())  # the template is not trained


def test_the_masked_objective_brings_its_own_loss():
    with pytest.raises(ValueError, match="objective='mae' has its own loss"):
        LearnConfig(data=[torch.zeros(1, 3, 32, 32)], steps=1, objective="mae", loss=lambda out, batch: out.sum())
    with pytest.raises(ValueError, match=r"learn\.objective"):
        LearnConfig(data=[torch.zeros(1, 3, 32, 32)], steps=1, objective="clip")
