"""The reconstruction of templated weights (issue 14): the GEMM-ordered Tucker contraction equals
opt_einsum's contraction and tensorly's ``tucker_to_tensor`` (values and gradients) for the
group shapes of every adapter, in both of its orders; ``unstack`` equals the rearrange-based
reference, values and gradients; and no-grad reconstructions are cached until a parameter
changes."""

from __future__ import annotations

import sys
from pathlib import Path

import opt_einsum
import pytest
import tensorly as tl
import torch
from _models import BUILDERS, OUTPUT_RTOL, RTOL, assert_close_rel, build
from einops import rearrange
from torch import Tensor

import tucker_init.templates.factorized as factorized_module
import tucker_init.templates.kinds.tucker as tucker_kind_module
from backbones import get_adapter
from tucker_init import factorize
from tucker_init.objectives.stochastic import WidthScaling
from tucker_init.templates.layout import GroupLayout, build_layout
from tucker_init.templates.tucker import depth_last, tucker_reconstruct

tl.set_backend("pytorch")


def einsum_reference(core: Tensor, X: Tensor, U: Tensor, V: Tensor) -> Tensor:
    """The contraction the library used before issue 14 (opt_einsum's optimal path)."""
    return opt_einsum.contract("abc,na,ob,ic->noi", core, X, U, V, optimize="optimal", backend="torch")


def group_shapes() -> list[tuple[str, tuple[int, int, int]]]:
    """``(family, (n, d, d))`` of every distinct group shape of the test models (ViT, DeiT,
    ResNet basic and bottleneck, ConvNeXt)."""
    shapes: dict[tuple[int, int, int], str] = {}
    for name in BUILDERS:
        model = build(name)
        for group in build_layout(model, get_adapter(model)).groups:
            shapes.setdefault(group.shape, name)
    return [(name, shape) for shape, name in shapes.items()]


GROUP_SHAPES = group_shapes()
# Fractions of the full ranks: low, middle, full (the full depth rank takes the X-first order).
RANK_FRACTIONS = [(0.25, 0.25, 0.25), (0.5, 0.5, 0.5), (1.0, 0.5, 0.5), (1.0, 1.0, 1.0)]
# Shapes of the benchmarked models (ViT L12 w192, ResNet-18 / -50 groups, ConvNeXt-atto) at
# their ranks, scaled down in d to keep the test fast; r1 = n and r1 << n both appear.
BENCH_SHAPES = [
    ((36, 48, 48), 144, 48),
    ((144, 48, 48), 144, 48),
    ((9, 32, 32), 18, 128),
    ((18, 64, 64), 18, 128),
    ((9, 32, 32), 56, 64),
    ((18, 64, 64), 85, 64),
    ((8, 20, 20), 16, 80),
    ((16, 40, 40), 16, 80),
]


def factors(core_shape, n, d_out, d_in, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r1, r2, r3 = core_shape
    shapes = [(r1, r2, r3), (n, r1), (d_out, r2), (d_in, r3)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


def ranks_of(shape, fractions):
    return tuple(max(1, round(f * size)) for f, size in zip(fractions, shape, strict=True))


def all_cases():
    cases = [
        pytest.param(ranks_of(shape, f), shape[0], shape[1], shape[2], id=f"{name}-{shape}-{f}")
        for name, shape in GROUP_SHAPES
        for f in RANK_FRACTIONS
    ]
    cases += [pytest.param(core, n, d, d, id=f"bench-{core}-{n}-{d}") for core, n, d in BENCH_SHAPES]
    return cases


def test_both_orders_are_exercised():
    orders = {depth_last(core, n, d, d) for core, n, d in BENCH_SHAPES}
    orders |= {depth_last(ranks_of(s, f), *s) for _, s in GROUP_SHAPES for f in RANK_FRACTIONS}
    assert orders == {True, False}
    assert depth_last((9, 32, 32), 56, 256, 256)  # r1 << n: M (r1, d, d) first, X last
    assert not depth_last((18, 64, 64), 18, 512, 512)  # r1 = n: X first


@pytest.mark.parametrize(("core_shape", "n", "d_out", "d_in"), all_cases())
def test_equals_einsum_and_tensorly_values_and_gradients(core_shape, n, d_out, d_in):
    for dtype in (torch.float64, torch.float32):
        inputs = factors(core_shape, n, d_out, d_in, dtype)
        found = tucker_reconstruct(*inputs)
        assert found.shape == (n, d_out, d_in) and found.is_contiguous()
        with torch.no_grad():
            exact = einsum_reference(*(t.double() for t in inputs))
            assert_close_rel(found.double(), exact, RTOL[dtype])
            assert_close_rel(found, einsum_reference(*inputs), RTOL[dtype])
            core, X, U, V = inputs
            assert_close_rel(found, tl.tucker_to_tensor((core, [X, U, V])), RTOL[dtype])
        upstream = torch.randn(n, d_out, d_in, generator=torch.Generator().manual_seed(7), dtype=dtype)
        grads = torch.autograd.grad(found, inputs, upstream)
        expected = torch.autograd.grad(einsum_reference(*inputs), inputs, upstream)
        for name, f, e in zip(("G", "X", "U", "V"), grads, expected, strict=True):
            assert_close_rel(f, e, RTOL[dtype], msg=f"{dtype} grad of {name}")


@pytest.mark.parametrize("core_shape", [(2, 3, 3), (5, 3, 2)])  # X last, X first
def test_gradcheck(core_shape):
    inputs = factors(core_shape, 5, 4, 3, torch.float64)
    assert torch.autograd.gradcheck(tucker_reconstruct, inputs)


# -- unstack -----------------------------------------------------------------------------------------
def unstack_reference(group: GroupLayout, tensor: Tensor) -> dict[str, Tensor]:
    """``GroupLayout.unstack`` before issue 14 (split + rearrange + unbind)."""
    d, S = group.width, group.slices_per_block
    chunks = tensor.reshape(group.depth, S, d, d).split([slot.count(d) for slot in group.slots], dim=1)
    out = {}
    for slot, chunk in zip(group.slots, chunks, strict=True):
        a, b = slot.blocks(d)
        if len(slot.shape) == 2:
            w = rearrange(chunk, "l (a b) o i -> l (a o) (b i)", a=a, b=b)
        else:
            kh, kw = slot.shape[2:]
            w = rearrange(chunk, "l (a b kh kw) o i -> l (a o) (b i) kh kw", a=a, b=b, kh=kh, kw=kw)
        for block, weight in zip(group.block_names, w.unbind(0), strict=True):
            out[f"{block}.{slot.name}"] = weight
    return out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_unstack_equals_reference_and_inverts_stack(name):
    model = build(name)
    params = dict(model.named_parameters())
    for group in build_layout(model, get_adapter(model)).groups:
        tensor = group.stack(params).requires_grad_()
        found, expected = group.unstack(tensor), unstack_reference(group, tensor)
        assert list(found) == group.param_names() and sorted(found) == sorted(expected)
        for key, weight in found.items():
            assert torch.equal(weight, expected[key]) and torch.equal(weight, params[key])
            assert weight.is_contiguous() and weight.data_ptr() != tensor.data_ptr()
        # Gradients, with one weight left out of the loss (its gradient is None: zeros).
        g = torch.Generator().manual_seed(3)
        upstream = {k: torch.randn(w.shape, generator=g) for k, w in list(found.items())[1:]}
        grad_found = torch.autograd.grad([found[k] for k in upstream], tensor, list(upstream.values()))[0]
        grad_expected = torch.autograd.grad([expected[k] for k in upstream], tensor, list(upstream.values()))[0]
        assert torch.equal(grad_found, grad_expected)


def test_factorized_model_gradients_equal_the_einsum_path(monkeypatch):
    """Whole model: output and every parameter's gradient as with the old contraction and unstack."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    results = []
    for old in (False, True):
        fm = factorize(build("resnet_bottleneck", torch.float64), ranks=(4, 6, 6)).train()
        if old:
            monkeypatch.setattr(tucker_kind_module, "tucker_reconstruct", einsum_reference)
            monkeypatch.setattr(GroupLayout, "unstack", unstack_reference)
        out = fm(x)
        out.square().sum().backward()
        results.append((out.detach(), {k: p.grad for k, p in fm.named_parameters()}))
    (out_new, grads_new), (out_old, grads_old) = results
    assert_close_rel(out_new, out_old, OUTPUT_RTOL[torch.float64])
    assert grads_new.keys() == grads_old.keys()
    for key, grad in grads_new.items():
        assert_close_rel(grad, grads_old[key], OUTPUT_RTOL[torch.float64], msg=key)


# -- cache of no-grad reconstructions ----------------------------------------------------------------
@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of reconstruct_group (one per group and reconstruction)."""
    calls = []
    original = factorized_module.reconstruct_group

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(factorized_module, "reconstruct_group", counting)
    return calls


def small_model():
    return factorize(build("vit"), ranks=(4, 16, 16)).eval()


def image(seed=1):
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_eval_forwards_and_materialize_reconstruct_once(counted):
    fm = small_model()
    groups = len(fm.layout.groups)
    with torch.no_grad():
        first = fm(image())
        second = fm(image())
    assert len(counted) == groups
    assert torch.equal(first, second)
    fm.materialize()
    assert len(counted) == groups
    # Eval mode with grad enabled but nothing requiring grad: cached too.
    fm.requires_grad_(False)
    fm(image())
    assert len(counted) == groups


def test_materialize_does_not_share_memory_with_the_cache():
    fm = small_model()
    dense = fm.materialize()
    with torch.no_grad():
        for p in dense.parameters():
            p.zero_()
        expected = fm(image())
    again = fm.materialize()
    assert any(p.abs().sum() > 0 for p in again.parameters())
    with torch.no_grad():
        assert torch.equal(fm(image()), expected)


def fresh_output(fm, x):
    """The output of a reconstruction that cannot come from the cache."""
    fm.clear_cache()
    with torch.no_grad():
        return fm(x)


@pytest.mark.parametrize(
    "change",
    ["optimizer_step", "in_place_edit", "load_state_dict", "new_parameter", "to_dtype"],
)
def test_parameter_updates_invalidate_the_cache(change, counted):
    fm = small_model()
    with torch.no_grad():
        before = fm(image())
    calls = len(counted)
    if change == "optimizer_step":
        fm.train()
        opt = torch.optim.AdamW(fm.parameters(), lr=1e-2)
        fm(image()).square().mean().backward()
        opt.step()
        fm.eval()
    elif change == "in_place_edit":
        with torch.no_grad():
            fm.scalers["g0"]["U"].mul_(2.0)
    elif change == "load_state_dict":
        state = {k: v.clone() for k, v in fm.state_dict().items()}
        state["template.shared"] = state["template.shared"] * 0.5
        fm.load_state_dict(state)
    elif change == "new_parameter":
        fm.template["shared"] = torch.nn.Parameter(fm.template["shared"].detach() * 0.5)
    else:
        fm.double()
    x = image().to(fm.template["shared"].dtype)
    with torch.no_grad():
        after = fm(x)
    assert len(counted) > calls  # reconstructed again
    if change == "to_dtype":
        assert after.dtype == torch.float64
        assert_close_rel(after, before.double(), OUTPUT_RTOL[torch.float32])
    else:
        assert not torch.equal(after, before)
    assert torch.equal(after, fresh_output(fm, x))


def test_training_forward_with_grad_never_uses_the_cache(counted):
    fm = small_model()
    with torch.no_grad():
        fm(image())
    calls = len(counted)
    fm.train()
    for _ in range(2):
        out = fm(image())
        assert out.requires_grad
        out.sum().backward()
    assert len(counted) == calls + 2 * len(fm.layout.groups)
    assert fm._cache is None  # dropped: the next update would make it stale
    assert all(p.grad is not None for p in fm.template.parameters())
    # Eval mode with grad (e.g. scaler learning with frozen BN statistics): not cached either.
    fm.eval()
    calls = len(counted)
    fm(image()).sum().backward()
    fm(image()).sum().backward()
    assert len(counted) == calls + 2 * len(fm.layout.groups)


def test_an_active_scaler_hook_bypasses_the_cache(counted):
    fm = small_model()
    scaling = WidthScaling("prefix", min_fraction=0.25, multiple=16, seed=0).attach(fm)
    groups = len(fm.layout.groups)
    with torch.no_grad():
        fm.eval()  # inactive hook: the identity, cached
        plain = fm(image())
        fm(image())
        assert len(counted) == groups
        fm.train()  # active hook: masks change with the step, never cached
        outputs = []
        for step in range(3):
            scaling.set_step(step)
            outputs.append(fm(image()))
            fm(image())
        assert len(counted) == groups + 6 * groups
        assert not all(torch.equal(o, plain) for o in outputs)
        fm.eval()
        assert torch.equal(fm(image()), plain)
        # A hook without an ``active`` flag counts as active.
        fm.scaler_hook = lambda index, scalers: {**scalers, "U": scalers["U"] * 0.5}
        calls = len(counted)
        halved = fm(image())
        fm(image())
        assert len(counted) == calls + 2 * groups
        assert not torch.equal(halved, plain)
        # materialize() never applies the hook: the cached un-hooked weights serve it.
        calls = len(counted)
        dense = fm.materialize().eval()
        assert len(counted) == calls
        assert_close_rel(dense(image()), plain, OUTPUT_RTOL[torch.float32])


# -- the benchmark script --------------------------------------------------------------------------
def test_bench_overhead_smoke(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import bench_overhead

    out = tmp_path / "bench.csv"
    assert bench_overhead.main(["--smoke", "--csv", str(out)]) == 0
    rows = bench_overhead.read_csv(out)
    assert {(r["case"], r["step"]) for r in rows} == {
        ("vit_smoke", "train"),
        ("vit_smoke", "mae"),
        ("resnet_smoke", "train"),
    }
    for r in rows:
        assert float(r["ratio"]) > 0 and float(r["cpu_ratio"]) > 0 and float(r["load1"]) >= 0
    printed = capsys.readouterr().out
    assert "| backbone | step | ranks |" in printed and "of it reconstruction" in printed
    assert bench_overhead.main(["--table", str(out), "--label", "smoke"]) == 0
    assert "| smoke | resnet_smoke |" in capsys.readouterr().out
    assert bench_overhead.main(["--smoke", "--profile"]) == 0
    assert "| resnet_smoke | 2, 8, 8 | 1 |" in capsys.readouterr().out
