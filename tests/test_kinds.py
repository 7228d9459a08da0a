"""Template kinds are objects registered by name: a new kind is one class and a registration,
and then factorizes, saves, loads and initializes like the built-in ones (a toy CP kind here)."""

from __future__ import annotations

import pytest
import torch
from _models import build, tiny_vit

from tucker_init import factorize, initialize, load_template, save_template
from tucker_init.templates.kinds import TuckerKind, get_kind, list_kinds
from tucker_init.templates.kinds import base as kinds_base
from tucker_init.templates.kinds.base import orthonormal, rms_scale
from tucker_init.validation import rank_tuple


class CPKind(TuckerKind):
    """CP: ``T = sum_r lambda_r x_r o u_r o v_r``, a Tucker template with a diagonal core; its
    scalers (X, U, V) resize to other depths and widths exactly as Tucker's do."""

    name = "cp"
    symbol = "λ"
    width_scaling = False

    def check_ranks(self, ranks, layout, share):
        r1, r2, r3 = rank_tuple(ranks)
        if not r1 == r2 == r3:
            raise ValueError(f"ranks of a CP template are (R, R, R), found {(r1, r2, r3)}")
        return [(r1, r2, r3)] * len(layout.groups)

    def shapes(self, layout, config):
        shapes = super().shapes(layout, config)
        return {k: (v[0],) if k.startswith("template.") else v for k, v in shapes.items()}

    def decompose(self, tensors, layout, config):
        raise ValueError("init='hosvd' is not available for 'cp' templates; use init='random'")

    def random(self, tensors, layout, config, generator):
        template, scalers = {}, []
        for i, (t, ranks) in enumerate(zip(tensors, config.ranks, strict=True)):
            scalers.append(
                {m: orthonormal(n, ranks[0], generator, t.dtype) for m, n in zip("XUV", t.shape, strict=True)}
            )
            key = "shared" if config.share else f"g{i}"
            if key not in template:
                template[key] = torch.randn(ranks[0], generator=generator, dtype=t.dtype) * rms_scale(t, ranks)
        return template, scalers

    def reconstruct(self, config, layout, index, template, scalers):
        weights = template["shared" if config.share else f"g{index}"]
        return torch.einsum("r,nr,or,ir->noi", weights, scalers["X"], scalers["U"], scalers["V"])


@pytest.fixture
def cp(monkeypatch):
    monkeypatch.setitem(kinds_base._KINDS, "cp", CPKind())  # registered for this test only
    return get_kind("cp")


def test_builtin_kinds_are_registered_in_order():
    assert list_kinds()[:2] == ["tucker", "kronecker"]
    assert get_kind("tucker").width_scaling and not get_kind("kronecker").width_scaling
    with pytest.raises(ValueError, match=r"method must be one of \['tucker', 'kronecker'\], found 'cq'"):
        get_kind("cq")


def test_a_new_kind_factorizes_saves_loads_and_initializes(cp, tmp_path):
    model = build("vit")
    fm = factorize(model, ranks=(16, 16, 16), method="cp", init="random", seed=1)
    assert fm.template["shared"].shape == (16,) and fm.scalers["g0"]["U"].shape == (64, 16)
    x = torch.randn(2, 3, 32, 32)
    fm(x).sum().backward()
    assert fm.template["shared"].grad is not None and fm.scalers["g0"]["X"].grad is not None

    path = save_template(tmp_path / "cp.safetensors", fm)
    restored = load_template(path, model=model)
    assert restored.config.method == "cp"
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), fm.eval()(x))

    target = tiny_vit(depth=3, embed_dim=96, num_heads=3)  # deeper and wider (head_dim 32, as the source)
    _, report = initialize(target, path, depth="interpolate", width="slice", return_report=True)
    assert report["blocks.2.mlp.fc1.weight"] == "template"
    with torch.no_grad():
        assert torch.isfinite(target(x)).all()


def test_kind_specific_errors_are_the_kinds(cp):
    with pytest.raises(ValueError, match=r"ranks of a CP template are \(R, R, R\), found \(4, 8, 8\)"):
        factorize(build("vit"), ranks=(4, 8, 8), method="cp", init="random")
    with pytest.raises(ValueError, match=r"init='hosvd' is not available for 'cp' templates"):
        factorize(build("vit"), ranks=(4, 4, 4), method="cp")
    from tucker_init import WidthScaling

    fm = factorize(build("vit"), ranks=(4, 4, 4), method="cp", init="random")
    with pytest.raises(ValueError, match=r"stochastic scaling applies to Tucker templates"):
        WidthScaling("prefix").attach(fm)
