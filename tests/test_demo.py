"""The demo's parts that decide what a newcomer reads: the verdict on one seed's gap, and the
path from a dense model (its lossless template, initialized with the rules the README
recommends) that the demo runs beside the Tucker MAE template."""

from __future__ import annotations

import pytest
import torch
from _models import RTOL, assert_close_rel

from tucker_init.demo import NOISE_POINTS, TEMPLATE, _check_settings, _init_once, verdict
from tucker_init.pipeline import load_model, lossless_rules, save_model


def test_the_demo_table_says_when_a_gap_is_noise():
    assert verdict(NOISE_POINTS + 0.5, quick=False) == "template ahead"
    assert verdict(-NOISE_POINTS - 0.5, quick=False, name="compress") == "random init ahead of compress"
    assert verdict(0.9, quick=False) == "template within one seed's noise"
    for gap in (0.9, NOISE_POINTS + 3, -NOISE_POINTS - 3):  # --quick's gaps say nothing, large or small
        assert verdict(gap, quick=True, name="compress") == "compress: --quick is too short to tell"


def test_lossless_rules_select_first_layers_and_add_own_channels_beyond_the_source():
    assert lossless_rules(TEMPLATE, TEMPLATE.with_size(3, 64)) == {"depth": "first", "width": "select"}
    assert lossless_rules(TEMPLATE, TEMPLATE) == {"depth": "first", "width": "select"}
    assert lossless_rules(TEMPLATE, TEMPLATE.with_size(8, 192)) == {"depth": "interpolate", "width": "zero_fanout"}


def test_the_compress_start_is_the_dense_model_at_its_size_and_reaches_deeper_wider_targets(tmp_path):
    torch.manual_seed(0)
    dense = TEMPLATE.build()
    save_model(tmp_path / "dense.safetensors", dense, TEMPLATE)
    sources = {"compress": tmp_path / "dense.safetensors"}

    same, _ = load_model(_init_once(TEMPLATE, "compress", sources, tmp_path / "same", seed=0))
    expected = dense.state_dict()
    for name, tensor in same.state_dict().items():
        assert_close_rel(tensor, expected[name], RTOL[torch.float32], msg=name)
    assert "template" in (tmp_path / "same" / "init_report.txt").read_text()

    deeper_wider = TEMPLATE.with_size(8, 192)
    model, spec = load_model(_init_once(deeper_wider, "compress", sources, tmp_path / "wide", seed=0))
    assert spec == deeper_wider and len(model.blocks) == 8 and model.embed_dim == 192


def test_a_demo_folder_run_with_other_settings_is_refused_not_reused(tmp_path):
    settings = {"seed": 0, "pretrain_steps": 200, "lossless_rules": {"vit-L3w64": {"width": "select"}}}
    _check_settings(tmp_path, settings)
    _check_settings(tmp_path, dict(settings))  # the same settings: its finished stages are reused
    with pytest.raises(ValueError, match=r"other settings \(pretrain_steps 200 -> 1000\): pass another --out"):
        _check_settings(tmp_path, {**settings, "pretrain_steps": 1000})
