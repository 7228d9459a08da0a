"""Template files: exact round trip, atomic writes, refusal of anything that is not ours."""

from __future__ import annotations

import json

import pytest
import torch
from _models import build
from safetensors.torch import save_file

from tucker_init import WeightTemplate, factorize, load_template, save_template


@pytest.fixture(scope="module")
def fm():
    return factorize(build("resnet"), ranks=(3, 8, 8)).eval()


def test_round_trip_is_exact(tmp_path, fm):
    path = save_template(tmp_path / "t.safetensors", fm)
    loaded = load_template(path)
    assert isinstance(loaded, WeightTemplate)
    assert loaded.config == fm.config and loaded.layout == fm.layout
    for key, value in fm.template.items():
        assert torch.equal(loaded.template[key], value)
    for i in range(len(fm.layout.groups)):
        for key, value in fm.scalers[f"g{i}"].items():
            assert torch.equal(loaded.scalers[i][key], value)
    assert loaded.backbone["family"] == "resnet" and loaded.backbone["depths"] == [2, 2, 1, 1]

    restored = load_template(path, model=build("resnet", seed=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(x), fm(x))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_kronecker_round_trip(tmp_path):
    fm = factorize(build("vit"), ranks=(4, 4, 4), method="kronecker", kron_sharing="component")
    path = save_template(tmp_path / "k.safetensors", fm)
    restored = load_template(path, model=build("vit"))
    for name, value in fm.reconstruct().items():
        assert torch.equal(restored.reconstruct()[name], value)


def test_metadata_says_what_it_is(tmp_path, fm):
    from safetensors import safe_open

    path = save_template(tmp_path / "t.safetensors", fm)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "tucker_init.template" and meta["format_version"] == "1"
    assert json.loads(meta["config"])["method"] == "tucker"
    assert json.loads(meta["layout"])["family"] == "resnet"
    assert meta["library_version"]


def test_truncated_file_is_refused(tmp_path, fm):
    path = save_template(tmp_path / "t.safetensors", fm)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is not a readable template file \(truncated or not safetensors\)"):
        load_template(path)


def test_random_file_is_refused(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes()
    )
    with pytest.raises(ValueError, match=r"is not a readable template file"):
        load_template(path)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"is a safetensors file but not a tucker_init template \(format 'pt'"):
        load_template(path)


def test_newer_format_is_refused(tmp_path, fm):
    from safetensors import safe_open

    path = save_template(tmp_path / "t.safetensors", fm)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata=meta | {"format_version": "99"})
    with pytest.raises(ValueError, match=r"has template format version 99; this tucker_init reads up to 1"):
        load_template(path)


def test_template_for_another_backbone_is_refused(tmp_path, fm):
    path = save_template(tmp_path / "t.safetensors", fm)
    with pytest.raises(
        ValueError,
        match=r"template does not fit this model: backbone family 'resnet' in the "
        r"template, 'vit' in the model",
    ):
        load_template(path, model=build("vit"))
    with pytest.raises(ValueError, match=r"template does not fit this model: .*initialize\(\)"):
        load_template(path, model=build("resnet_bottleneck"))


def test_missing_file_and_bad_argument(tmp_path, fm):
    with pytest.raises(FileNotFoundError, match=r"template file .*nope.safetensors' does not exist"):
        load_template(tmp_path / "nope.safetensors")
    with pytest.raises(TypeError, match=r"template must be a FactorizedModel or WeightTemplate, found dict"):
        save_template(tmp_path / "x.safetensors", {})
