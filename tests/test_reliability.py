"""Hostile input to the core (issue 9): no silent wrong results, bounded memory, atomic I/O and
every standard kind of input. Each test here failed before its fix."""

from __future__ import annotations

import json
import os
import stat
import warnings

import numpy as np
import pytest
import torch
from _models import build, tiny_vit
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from backbones import GenericAdapter
from tucker_init import LearnConfig, factorize, initialize, load_template, save_template
from tucker_init.templates.tucker import hosvd, tucker_reconstruct


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found.double() - expected.double()).norm() / expected.double().norm())


# -- 2. no silent wrong results --------------------------------------------------------------------
def test_non_finite_batchnorm_buffer_is_refused():
    model = build("resnet")
    model.layer2[0].bn1.running_var[3] = float("nan")
    with pytest.raises(ValueError, match=r"buffer 'layer2.0.bn1.running_var' holds 1 non-finite value"):
        factorize(model, ranks=(2, 4, 4))


def _rewrite(path, change_tensors=None, change_meta=None):
    """Rewrite a template file with some tensors or metadata changed (a damaged file)."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.fixture
def saved(tmp_path):
    return save_template(tmp_path / "t.safetensors", factorize(build("vit"), ranks=(4, 8, 8)))


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("template.shared", r"tensor 'template.shared' holds 1 non-finite value"),
        ("scalers.g0.U", r"tensor 'scalers.g0.U' holds 1 non-finite value"),
        ("remainder.norm.weight", r"tensor 'remainder.norm.weight' holds 1 non-finite value"),
    ],
)
def test_non_finite_values_in_a_template_file_are_refused(saved, key, match):
    def poison(tensors):
        tensors[key].view(-1)[0] = float("inf")

    _rewrite(saved, poison)
    with pytest.raises(ValueError, match=match + r".*t\.safetensors"):
        load_template(saved)


def _set_config(field, value):
    def change(meta):
        config = json.loads(meta["config"])
        config[field] = value
        meta["config"] = json.dumps(config)

    return change


@pytest.mark.parametrize(
    ("tensors", "meta", "match"),
    [
        (lambda t: t.pop("template.shared"), None, r"missing tensor 'template.shared'"),
        (lambda t: t.pop("scalers.g0.X"), None, r"missing tensor 'scalers.g0.X'"),
        (
            lambda t: t.__setitem__("scalers.g0.U", torch.zeros(64, 9)),
            None,
            r"'scalers.g0.U' has shape \(64, 9\), expected \(64, 8\)",
        ),
        (
            lambda t: t.__setitem__("template.shared", torch.zeros(4, 8, 8, dtype=torch.int64)),
            None,
            r"'template.shared' has dtype torch.int64, expected a floating-point dtype",
        ),
        (lambda t: t.__setitem__("template.extra", torch.zeros(2)), None, r"unexpected tensor 'template.extra'"),
        (None, _set_config("method", "cp"), r"method must be one of \['tucker', 'kronecker'\], found 'cp'"),
        (None, _set_config("ranks", [[4, 8]]), r"ranks.*3 entries"),
        (None, _set_config("ranks", [[4, 8, 8], [4, 8, 8]]), r"ranks for 2 groups, the layout has 1"),
        (None, _set_config("share", "yes"), r"share must be a bool"),
        (None, lambda m: m.__setitem__("format_version", "one"), r"format_version must be an int, found 'one'"),
        (None, lambda m: m.__setitem__("layout", json.dumps({"family": "vit"})), r"damaged template metadata"),
    ],
)
def test_damaged_template_files_are_refused(saved, tensors, meta, match):
    _rewrite(saved, tensors, meta)
    with pytest.raises(ValueError, match=r"t\.safetensors.*" + match):
        load_template(saved)


def test_remainder_that_does_not_fit_the_target_is_warned_about(saved):
    def odd_head(tensors):
        tensors["remainder.head.weight"] = torch.randn(7, 3)

    _rewrite(saved, odd_head)
    target = tiny_vit(depth=3)
    with pytest.warns(UserWarning, match=r"head.weight.*\(7, 3\).*does not fit.*\(10, 64\)"):
        _, report = initialize(target, saved, return_report=True)
    assert report["head.weight"] == "target-init"
    assert any("head.weight" in note for note in report.notes)


# -- 4. bounded memory --------------------------------------------------------------------------------
def test_hosvd_of_a_long_thin_tensor_never_builds_the_large_gram(monkeypatch):
    tensor = torch.randn(30_000, 4, 4, dtype=torch.float64)
    largest = []
    real_eigh = torch.linalg.eigh

    def eigh(matrix, *args, **kwargs):
        largest.append(matrix.shape[-1])
        return real_eigh(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", eigh)
    core, factors = hosvd(tensor, (16, 4, 4))
    assert max(largest, default=0) <= 16
    assert relative_error(tucker_reconstruct(core, *factors), tensor) < 1e-12


def test_full_rank_of_a_long_thin_group_is_lossless_and_small():
    # 2000 blocks of 4 -> 4 linears: mode 1 (2000 slices) is far longer than 4 * 4.
    model = nn.Sequential(nn.Sequential(*[nn.Linear(4, 4) for _ in range(2000)]))
    fm = factorize(model, ranks="full", adapter=GenericAdapter(["0"]))
    assert fm.template["shared"].shape == (16, 4, 4)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert relative_error(fm(x), model(x)) < 1e-4


def test_unit_width_one_is_refused_with_what_to_do():
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 3)))
    with pytest.raises(ValueError, match=r"unit width d=1.*is_primary"):
        factorize(model, ranks=(1, 1, 1), adapter=GenericAdapter(["0"]))


# -- 5. atomic, clean I/O --------------------------------------------------------------------------
def test_failing_learn_leaves_the_target_bit_identical(saved):
    target = tiny_vit(depth=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    wrong_size = [(torch.randn(4, 3, 16, 16), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(Exception):  # noqa: B017 (timm's own error for the image size)
        initialize(target, saved, learn=LearnConfig(data=wrong_size, steps=2))
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_files_get_their_permissions_from_the_umask(tmp_path):
    from tucker_init.training.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        template = save_template(tmp_path / "t.safetensors", factorize(build("vit"), ranks=(2, 4, 4)))
        checkpoint = save_checkpoint(tmp_path / "last.pt", step=1)
    finally:
        os.umask(old)
    for path in (template, checkpoint):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_temporary_files_of_a_killed_save_are_cleaned_by_the_next_save(tmp_path):
    from tucker_init.training.checkpoint import save_checkpoint

    fm = factorize(build("vit"), ranks=(2, 4, 4))
    # What a save killed between creating its temporary file and the rename leaves behind.
    (tmp_path / ".t.safetensors.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".last.pt.xyz789.tmp").write_bytes(b"half")
    (tmp_path / ".other.txt.tmp").write_bytes(b"not ours")
    save_template(tmp_path / "t.safetensors", fm)
    save_checkpoint(tmp_path / "last.pt", step=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.txt.tmp", "last.pt", "t.safetensors"]


# -- 6. every standard kind of input -------------------------------------------------------------------
@pytest.mark.parametrize(
    "ranks",
    [
        (np.int64(4), np.int32(8), 8),
        (torch.tensor(4), 8, torch.tensor(8)),
        np.array([4, 8, 8]),
        torch.tensor([4, 8, 8]),
    ],
    ids=["numpy-ints", "torch-ints", "numpy-array", "torch-tensor"],
)
def test_numpy_and_torch_integers_are_ints(ranks):
    fm = factorize(build("vit"), ranks=ranks, seed=np.int64(3))
    assert fm.config.ranks == ((4, 8, 8),)
    assert all(type(r) is int for r in fm.config.ranks[0])


def test_numpy_seed_in_initialize(saved):
    initialize(tiny_vit(depth=3), saved, seed=np.int64(2))


@pytest.mark.parametrize("bad", [np.float64(4.0), np.array([[4, 8, 8]]), np.bool_(True)])
def test_non_integer_numpy_ranks_are_refused(bad):
    ranks = (bad, 8, 8) if np.ndim(bad) == 0 else bad
    with pytest.raises((TypeError, ValueError), match=r"ranks"):
        factorize(build("vit"), ranks=ranks)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models_are_lossless_to_their_precision(dtype):
    model = build("vit").to(dtype)
    fm = factorize(model, ranks="full")
    dense = fm.materialize()
    eps = torch.finfo(dtype).eps
    for name, value in model.state_dict().items():
        rebuilt = dense.state_dict()[name]
        assert rebuilt.dtype == dtype, name
        # A float32 template rounds back to the very same low-precision values: far below one
        # rounding (eps / 2 per element) on average. A template in the dtype itself is ~eps off.
        assert relative_error(rebuilt, value) <= 0.01 * eps, name


def test_meta_device_model_is_refused():
    with torch.device("meta"):
        model = tiny_vit()
    with pytest.raises(ValueError, match=r"meta device.*to_empty"):
        factorize(model, ranks=(2, 4, 4))
    with pytest.raises(ValueError, match=r"meta device"):
        initialize(model, factorize(build("vit"), ranks=(2, 4, 4)))


def test_weights_tied_across_blocks_are_refused():
    model = build("vit")
    model.blocks[1].mlp.fc1.weight = model.blocks[0].mlp.fc1.weight
    with pytest.raises(ValueError, match=r"tied.*'blocks.1.mlp.fc1.weight'.*'blocks.0.mlp.fc1.weight'"):
        factorize(model, ranks=(2, 4, 4))


@pytest.mark.parametrize("training", [True, False])
def test_factorize_keeps_the_train_or_eval_mode(training, tmp_path):
    model = build("vit").train(training)
    fm = factorize(model, ranks=(2, 4, 4))
    assert fm.training is training and fm.backbone.training is training
    path = save_template(tmp_path / "t.safetensors", fm)
    assert load_template(path, model=model).training is training


def test_no_warning_for_a_template_that_fits(saved):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        initialize(tiny_vit(depth=3), saved)


def test_numpy_integers_everywhere_an_int_is_taken(saved):
    from tucker_init import WidthScaling, get_initializer

    assert LearnConfig(data=[], steps=np.int64(3)).steps == 3
    scaling = WidthScaling("prefix", seed=np.int32(5), multiple=np.int64(8))
    assert (scaling.seed, scaling.multiple) == (5, 8)
    scaling.set_step(np.int64(2))
    assert scaling.step == 2
    assert GenericAdapter(["0"], width_multiple=np.int64(2)).width_multiple(nn.Module()) == 2
    get_initializer("random")(tiny_vit(depth=3), seed=np.int64(1))
    with pytest.raises(TypeError, match=r"seed must be an int, found float"):
        WidthScaling("prefix", seed=1.5)


def test_non_finite_values_in_a_model_file_are_refused(tmp_path):
    from tucker_init.pipeline import ModelSpec, load_model, save_model

    spec = ModelSpec("vit", 2, 64, img_size=16, patch_size=4)
    path = save_model(tmp_path / "m.safetensors", spec.build(), spec)

    def poison(tensors):
        tensors["blocks.1.attn.proj.weight"][0, 0] = float("nan")

    _rewrite(path, poison)
    with pytest.raises(
        ValueError, match=r"tensor 'blocks.1.attn.proj.weight' holds 1 non-finite value.*m\.safetensors"
    ):
        load_model(path)
