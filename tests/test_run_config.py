"""``--config run.yaml`` on every command and the ``args.yaml`` a run leaves (issue 13.3)."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tucker_init.cli import build_parser, main

SMALL = {"model": "vit", "depth": 2, "width": 64, "data": "digits", "batch-size": 16, "ranks": [2, 16, 16]}


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_every_command_takes_a_config():
    parser = build_parser()
    commands = next(a.choices for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    for name, sub in commands.items():
        assert any("--config" in a.option_strings for a in sub._actions), name


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path, capsys):
    config = _write(tmp_path / "run.yaml", {**SMALL, "steps": 7})
    main(["pretrain", "--config", config, "--steps", "3", "--out", str(tmp_path / "a")])
    saved = yaml.safe_load((tmp_path / "a" / "args.yaml").read_text())
    assert saved["command"] == "pretrain"
    assert saved["steps"] == 3  # the flag won
    assert saved["width"] == 64 and saved["ranks"] == [2, 16, 16]  # from the YAML
    assert saved["recipe"] == "small_pretrain"  # a default, resolved
    assert "step 3/3" in capsys.readouterr().out


def test_a_run_repeats_from_its_args_yaml_alone(tmp_path):
    config = _write(tmp_path / "run.yaml", {**SMALL, "steps": 3})
    main(["pretrain", "--config", config, "--out", str(tmp_path / "first")])
    main(["pretrain", "--config", str(tmp_path / "first" / "args.yaml"), "--out", str(tmp_path / "again")])
    first = load_file(tmp_path / "first" / "template.safetensors")
    again = load_file(tmp_path / "again" / "template.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_init_leaves_its_args_beside_the_model_file(tmp_path):
    main(["pretrain", "--config", _write(tmp_path / "run.yaml", {**SMALL, "steps": 2}), "--out", str(tmp_path / "p")])
    template = str(tmp_path / "p" / "template.safetensors")
    init = _write(tmp_path / "init.yaml", {"template": template, "model": "vit", "depth": 1, "width": 64})
    main(["init", "--config", init, "--out", str(tmp_path / "small.safetensors")])
    saved = yaml.safe_load((tmp_path / "small.args.yaml").read_text())
    assert saved["command"] == "init" and saved["depth"] == 1 and saved["template"] == template


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"stepz": 3}, "unknown option(s) ['stepz']"),
        ({"steps": -3}, "--steps: expected a positive int, found '-3'"),
        ({"dense": "yes"}, "dense is a switch: expected true or false"),
        ({"command": "finetune"}, "the config is for `finetune`, not for `pretrain`"),
        ({"ranks": {"r1": 2}}, "ranks takes a value or a list"),
        ("- just\n- a list\n", "must hold a mapping of options"),
        ("steps: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, capsys, config, expected):
    path = tmp_path / "bad.yaml"
    if isinstance(config, str):
        path.write_text(config)
    else:
        _write(path, config)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--config", str(path), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "x").exists()


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--config", str(tmp_path / "none.yaml")])
    assert "no such file" in capsys.readouterr().err
