"""The command line end to end on real data (scikit-learn digits), tiny sizes: pretrain ->
init -> finetune -> evaluate, plus model files and argument errors."""

from __future__ import annotations

import json

import pytest
import torch
from _models import OUTPUT_RTOL, RTOL, assert_close_rel

from tucker_init import factorize, load_template, save_template
from tucker_init.cli import build_parser, main
from tucker_init.pipeline import ModelSpec, load_model, save_model

TINY = ["--model", "vit", "--img-size", "16", "--patch-size", "4"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("pretrain", "init", "finetune", "evaluate", "demo"):
        assert command in out


@pytest.mark.parametrize("command", ["pretrain", "init", "finetune", "evaluate", "demo"])
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tucker-init {command}") and "--config YAML" in out


def test_pretrain_init_finetune_evaluate(tmp_path, capsys):
    pre = tmp_path / "pre"
    common = ["--data", "digits", "--seed", "0", "--device", "cpu"]
    assert (
        main(
            [
                "pretrain",
                *TINY,
                "--depth",
                "2",
                "--width",
                "64",
                "--ranks",
                "8",
                "32",
                "32",
                "--steps",
                "4",
                "--batch-size",
                "16",
                "--out",
                str(pre),
                *common,
            ]
        )
        == 0
    )
    template = load_template(pre / "template.safetensors")
    assert template.config.ranks[0] == (8, 32, 32)
    assert (pre / "metrics.jsonl").is_file() and (pre / "last.pt").is_file()

    init_file = tmp_path / "L3w128.safetensors"
    assert (
        main(
            [
                "init",
                "--template",
                str(pre / "template.safetensors"),
                *TINY,
                "--depth",
                "3",
                "--width",
                "128",
                "--out",
                str(init_file),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "blocks.2.attn.qkv.weight" in out and "template" in out
    model, spec = load_model(init_file)
    assert spec == ModelSpec("vit", 3, 128, 10, 16, 4) and len(model.blocks) == 3

    ft = tmp_path / "ft"
    assert (
        main(["finetune", "--weights", str(init_file), "--steps", "3", "--batch-size", "16", "--out", str(ft), *common])
        == 0
    )
    final = json.loads(capsys.readouterr().out.splitlines()[0])
    assert final["step"] == 3 and 0 <= final["final"]["top1"] <= 100
    assert main(["evaluate", "--weights", str(ft / "model.safetensors"), "--data", "digits"]) == 0
    evaluated = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert evaluated["top1"] == pytest.approx(final["final"]["top1"])


def test_model_file_round_trip_and_refusals(tmp_path):
    spec = ModelSpec("vit", depth=1, width=64, img_size=16)
    model = spec.build()
    path = save_model(tmp_path / "m.safetensors", model, spec)
    again, spec_again = load_model(path)
    assert spec_again == spec
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
    with pytest.raises(FileNotFoundError, match=r"model file .* does not exist"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match=r"is not a readable model file"):
        load_model(tmp_path / "junk.safetensors")


def test_bad_arguments_exit_with_usage(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--out", "x", "--method", "cp"])
    assert "invalid choice: 'cp'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["init", "--out", "x"])
    assert "--template" in capsys.readouterr().err


def test_pretrain_rejects_unknown_scaling(tmp_path):
    from tucker_init.pipeline import pretrain

    with pytest.raises(ValueError, match=r"scaling must be one of \['off', 'prefix', 'rank', 'subnet'\], found 'wide'"):
        pretrain(ModelSpec("vit", 1, 64, img_size=16), "digits", tmp_path, scaling="wide", steps=1)


def test_pretrain_a_resnet_template_at_32px(tmp_path):
    from tucker_init.pipeline import pretrain

    spec = ModelSpec("resnet", depth=1, width=8, img_size=32)
    result = pretrain(spec, "digits", tmp_path, ranks=(4, 8, 8), steps=2, batch_size=8, device="cpu")
    assert load_template(result.path).family == "resnet"


def test_resnetd_template_initializes_other_widths(tmp_path):
    from tucker_init.pipeline import init_model, pretrain

    spec = ModelSpec("resnetd", depth=2, width=16, img_size=32)
    result = pretrain(spec, "digits", tmp_path, ranks=(9, 16, 16), steps=2, batch_size=8, device="cpu")
    for depth, width in [(1, 8), (3, 24)]:
        model, report = init_model(spec.with_size(depth, width), result.path)
        assert "target-init" not in report.counts()
        with torch.no_grad():
            assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()
    with pytest.raises(ValueError, match=r"resnetd width must be even \(its stem is width / 2 wide\), found 15"):
        ModelSpec("resnetd", depth=1, width=15).build()


def test_loaders_keep_train_and_test_apart():
    from tucker_init import load_dataset
    from tucker_init.pipeline import make_loaders

    digits = load_dataset("digits")
    with pytest.raises(ValueError, match=r"data is an ImageDataset: pass test_data= as well"):
        make_loaders(digits, 16)
    # the test subset is the same images whatever the training seed
    _, a = make_loaders("digits", 16, seed=1, test_subset=50)
    _, b = make_loaders("digits", 16, seed=2, test_subset=50)
    assert torch.equal(a.dataset.images, b.dataset.images)


def test_model_takes_any_timm_name(tmp_path, capsys):
    # before: --depth/--width defaulted to 6/128, so every timm name was refused
    common = ["--data", "digits", "--device", "cpu", "--steps", "1", "--batch-size", "4"]
    pre = tmp_path / "r18"
    argv = ["pretrain", "--model", "resnet18", "--ranks", "8", "32", "32", "--img-size", "32", *common]
    assert main([*argv, "--out", str(pre)]) == 0
    assert load_template(pre / "template.safetensors").family == "resnet"
    out = tmp_path / "r18.safetensors"
    assert (
        main(["init", "--template", str(pre / "template.safetensors"), "--model", "resnet18", "--out", str(out)]) == 0
    )
    assert load_model(out)[1] == ModelSpec("resnet18", None, None, 10, 32, None)


def test_init_from_a_vit_template_to_a_timm_vit(tmp_path, capsys):
    pre = tmp_path / "pre"
    common = ["--data", "digits", "--device", "cpu", "--steps", "2", "--batch-size", "8"]
    size = ["--depth", "1", "--width", "64", "--ranks", "4", "32", "32"]
    assert main(["pretrain", *TINY, *size, *common, "--out", str(pre)]) == 0
    out = tmp_path / "tiny.safetensors"
    target = ["--model", "vit_tiny_patch16_224", "--img-size", "16", "--patch-size", "4"]
    assert main(["init", "--template", str(pre / "template.safetensors"), *target, "--out", str(out)]) == 0
    model, spec = load_model(out)
    assert spec == ModelSpec("vit_tiny_patch16_224", None, None, 10, 16, 4) and len(model.blocks) == 12
    assert main(["finetune", "--weights", str(out), *common, "--out", str(tmp_path / "ft")]) == 0


def test_family_sizes_default_when_not_given():
    from tucker_init.cli import _spec

    parse = build_parser().parse_args
    assert _spec(parse(["init", "--template", "t", "--out", "x"])) == ModelSpec("vit", 6, 128, 10, 32, 4)
    resnet = _spec(parse(["init", "--template", "t", "--model", "resnet", "--width", "16", "--out", "x"]))
    assert resnet == ModelSpec("resnet", 2, 16, 10, 32, 4)


def test_init_from_a_dense_model_is_weight_selection_at_its_width_and_reaches_wider(tmp_path, capsys):
    dense_dir = tmp_path / "dense"
    common = ["--data", "digits", "--device", "cpu", "--steps", "2", "--batch-size", "8"]
    assert main(["pretrain", *TINY, "--depth", "2", "--width", "64", "--dense", *common, "--out", str(dense_dir)]) == 0
    dense, _ = load_model(dense_dir / "dense.safetensors")
    source = ["init", "--from-dense", str(dense_dir / "dense.safetensors"), *TINY, "--depth-rule", "first"]

    shallower = tmp_path / "L1w64.safetensors"
    assert main([*source, "--depth", "1", "--width", "64", "--out", str(shallower)]) == 0
    found = load_model(shallower)[0].state_dict()
    expected = {k: v for k, v in dense.state_dict().items() if not k.startswith("blocks.1.")}
    assert found.keys() == expected.keys()
    for name, tensor in found.items():  # the first block and everything outside the blocks, as they were
        assert_close_rel(tensor, expected[name], RTOL[torch.float32], msg=name)

    wider = ["--depth", "2", "--width", "128", "--width-rule", "zero_fanout", "--out", str(tmp_path / "w.safetensors")]
    assert main([*source, *wider]) == 0
    widened = load_model(tmp_path / "w.safetensors")[0]
    assert widened.embed_dim == 128 and (widened.head.weight[:, 64:] == 0).all()  # new channels not read yet
    deeper = ["--depth", "3", "--width", "64", "--depth-rule", "identity", "--out", str(tmp_path / "d.safetensors")]
    assert main([*source, *deeper]) == 0
    deepened = load_model(tmp_path / "d.safetensors")[0].eval()
    assert len(deepened.blocks) == 3 and (deepened.blocks[2].attn.proj.weight == 0).all()  # a new block, identity
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close_rel(deepened(images), dense.eval()(images), OUTPUT_RTOL[torch.float32], msg="identity blocks")
    capsys.readouterr()
    template = tmp_path / "t.safetensors"
    save_template(template, factorize(dense, ranks="full"))
    with pytest.raises(SystemExit):
        main(["init", "--from-dense", str(template), *TINY, "--out", str(tmp_path / "x.safetensors")])
    assert "is a template file, not a dense model" in capsys.readouterr().err
    missing = ["init", "--from-dense", str(tmp_path / "none.safetensors"), *TINY]
    with pytest.raises(SystemExit) as exit_info:
        main([*missing, "--out", str(tmp_path / "x.safetensors")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--from-dense" in err and len(err.strip().splitlines()) == 1
