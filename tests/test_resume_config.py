"""A resume with any changed setting is refused before any state is loaded, naming the field; model
sizes of 0 or below are refused; a job does not overwrite another job's files (tiny, CPU, digits)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tucker_init import load_dataset
from tucker_init.models import create_model
from tucker_init.pipeline import ModelSpec, finetune_model, init_model, pretrain, save_model
from tucker_init.training.checkpoint import load_checkpoint
from tucker_init.training.data import default_dataset

SPEC = ModelSpec("vit", depth=1, width=64, img_size=16)
RUN = {"ranks": (4, 8, 8), "steps": 2, "batch_size": 8, "device": "cpu"}


def _pretrain(out: Path, spec: ModelSpec = SPEC, data: str = "digits", **changes):
    return pretrain(spec, data, out, **(RUN | changes))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre")
    _pretrain(out)
    return out


def test_checkpoint_records_the_whole_job(run):
    job = load_checkpoint(run / "last.pt")["job"]
    assert job["kind"] == "pretrain" and job["data"] == "digits" and job["ranks"] == [4, 8, 8]
    assert job["img_size"] == 16 and job["method"] == "tucker" and job["mask_ratio"] == 0.75
    assert job["data_fingerprint"] == load_dataset("digits").fingerprint()


def test_same_config_resumes(run):
    result = _pretrain(run, resume=True)
    assert result.train.completed and result.train.step == 2


@pytest.mark.skipif(default_dataset() != "fashion_mnist", reason="fashion_mnist is not installed")
def test_resume_on_another_data_set_is_refused(run):
    with pytest.raises(ValueError, match=r"config differs in data: checkpoint 'digits', now 'fashion_mnist'"):
        _pretrain(run, data="fashion_mnist", resume=True)


def test_resume_on_other_images_of_the_same_data_set_is_refused(run):
    with pytest.raises(ValueError, match=r"config differs in .*data_fingerprint: checkpoint \{'images': \d+"):
        _pretrain(run, train_subset=500, resume=True)


def test_resume_with_other_ranks_is_refused(run):
    # before: load_state_dict's raw "size mismatch" RuntimeError
    with pytest.raises(ValueError, match=r"config differs in ranks: checkpoint \[4, 8, 8\], now \[4, 16, 8\]"):
        _pretrain(run, ranks=(4, 16, 8), resume=True)


def test_resume_with_another_image_size_is_refused(run):
    other = ModelSpec("vit", depth=1, width=64, img_size=32)
    with pytest.raises(ValueError, match=r"config differs in img_size: checkpoint 16, now 32"):
        _pretrain(run, spec=other, resume=True)


def test_resume_with_other_method_and_mask_ratio_names_both(run):
    with pytest.raises(ValueError, match=r"config differs in mask_ratio: checkpoint 0.75, now 0.5"):
        _pretrain(run, mask_ratio=0.5, resume=True)
    with pytest.raises(ValueError, match=r"config differs in .*dense: checkpoint False, now True"):
        _pretrain(run, dense=True, resume=True)


def test_finetune_resume_with_another_model_or_data_is_refused(tmp_path):
    out = tmp_path / "ft"
    common = {"steps": 2, "batch_size": 8, "image_size": 16, "device": "cpu", "out_dir": out}
    finetune_model(SPEC.build(), "digits", **common)
    assert load_checkpoint(out / "last.pt")["job"]["kind"] == "finetune"
    assert finetune_model(SPEC.build(), "digits", resume=True, **common).completed
    wider = SPEC.with_size(1, 128).build()
    with pytest.raises(ValueError, match=r"config differs in model: checkpoint 'VisionTransformer"):
        finetune_model(wider, "digits", resume=True, **common)
    with pytest.raises(ValueError, match=r"config differs in .*train_subset: checkpoint None, now 300"):
        finetune_model(SPEC.build(), "digits", resume=True, train_subset=300, **common)
    with pytest.raises(ValueError, match=r"config differs in weights: checkpoint None, now 'a.safetensors'"):
        finetune_model(SPEC.build(), "digits", resume=True, job={"weights": "a.safetensors"}, **common)


def test_a_job_does_not_take_over_another_jobs_folder(run, tmp_path):
    before = (run / "last.pt").read_bytes()
    common = {"steps": 2, "batch_size": 8, "image_size": 16, "device": "cpu", "out_dir": run}
    with pytest.raises(ValueError, match=r"holds the checkpoint of a pretrain job .* a finetune job would overwrite"):
        finetune_model(SPEC.build(), "digits", **common)
    with pytest.raises(ValueError, match=r"config differs in kind: checkpoint 'pretrain', now 'finetune'"):
        finetune_model(SPEC.build(), "digits", resume=True, **common)
    assert (run / "last.pt").read_bytes() == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"out_dir .*file' is a file; expected a folder"):
        _pretrain(tmp_path / "file")


def test_save_model_keeps_files_that_are_not_model_files(run, tmp_path):
    model = SPEC.build()
    for name in ("template.safetensors", "metrics.jsonl", "last.pt"):
        before = (run / name).read_bytes()
        with pytest.raises(ValueError, match=r"exists and is not a tucker_init model file .* refusing to overwrite"):
            save_model(run / name, model, SPEC)
        assert (run / name).read_bytes() == before
    with pytest.raises(IsADirectoryError, match=r"is a folder; expected the path of a .safetensors file"):
        save_model(tmp_path, model, SPEC)
    path = save_model(tmp_path / "m.safetensors", model, SPEC)
    save_model(path, model, SPEC)  # a model file may be replaced


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, r"vit depth must be a positive int, found 0"),
        ({"width": 0}, r"vit width must be a positive int, found 0"),
        ({"depth": -2}, r"vit depth must be a positive int, found -2"),
        ({"name": "resnet", "depth": 0}, r"resnet depth must be a positive int, found 0"),
        ({"name": "convnext", "width": 0}, r"convnext width must be a positive int, found 0"),
        ({"img_size": 0}, r"img_size must be a positive int or None \(the default\), found 0"),
        ({"num_classes": 0}, r"num_classes must be a positive int, found 0"),
        ({"name": "resnet18", "depth": 0}, r"depth/width apply to the families .* found depth=0"),
        ({"name": "no_such_model"}, r"a timm model name .* found 'no_such_model'"),
    ],
)
def test_create_model_refuses_sizes_of_zero_or_below(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(**({"name": "vit"} | kwargs))


def test_model_spec_refuses_sizes_of_zero_or_below():
    with pytest.raises(ValueError, match=r"depth must be a positive int or None \(the default\), found 0"):
        ModelSpec("vit", depth=0)
    with pytest.raises(ValueError, match=r"width must be a positive int or None \(the default\), found 0"):
        ModelSpec("resnet", depth=1, width=0)
    with pytest.raises(ValueError, match=r"patch_size must be a positive int or None \(the default\), found 0"):
        ModelSpec("vit", patch_size=0)
    assert len(ModelSpec("vit", depth=None, width=None).build().blocks) == 6  # None is the default


def test_timm_names_take_img_size_where_the_model_does():
    vit = ModelSpec("vit_tiny_patch16_224", None, None, img_size=16, patch_size=4).build()
    with torch.no_grad():
        assert vit(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    assert ModelSpec("resnet18", None, None, img_size=32, patch_size=None).build().fc.out_features == 10
    with pytest.raises(ValueError, match=r"the timm model 'resnet18' does not take a patch_size, found 4"):
        ModelSpec("resnet18", None, None).build()


def test_init_model_refuses_unused_data_and_negative_learn_steps(run):
    template = run / "template.safetensors"
    with pytest.raises(ValueError, match=r"data / data_root are used only with learn_steps > 0.*data='digits'"):
        init_model(SPEC, template, data="digits")
    with pytest.raises(ValueError, match=r"learn_steps must be an int >= 0, found -1"):
        init_model(SPEC, template, learn_steps=-1, data="digits")


def test_jobs_are_compared_only_when_both_are_recorded(tmp_path):
    from tucker_init.training import TrainConfig, check_resume

    config = TrainConfig(steps=2)
    saved = {"config": config.to_dict(), "total_steps": 2}
    check_resume(saved, config, 2, tmp_path / "last.pt", {"kind": "pretrain"})  # an older checkpoint: no job
    check_resume(saved | {"job": {"kind": "pretrain"}}, config, 2, tmp_path / "last.pt", None)
    with pytest.raises(ValueError, match=r"config differs in ranks: checkpoint \[1, 2, 3\], now \[1, 2, 4\]$"):
        job = {"kind": "pretrain", "ranks": [1, 2, 3]}
        check_resume(saved | {"job": job}, config, 2, tmp_path / "last.pt", {"kind": "pretrain", "ranks": (1, 2, 4)})
