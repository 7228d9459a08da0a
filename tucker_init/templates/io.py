"""Template files: safetensors tensors plus JSON metadata; nothing is ever unpickled.

A file holds the template, the scalers of the model it was trained on, that model's dense
remainder parameters and buffers (stem, norms, head, BN statistics) and metadata: format
and library versions, backbone family and sizes, layout, ranks and method.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter

from ..files import atomic_write
from ..validation import check_finite
from .factorized import FactorizedModel
from .layout import ModelLayout, build_layout
from .template import TemplateConfig, WeightTemplate, template_shapes

__all__ = ["FORMAT", "FORMAT_VERSION", "WeightTemplate", "load_template", "save_template", "write_model_card"]

FORMAT = "tucker_init.template"  # a file format name, not the module path: never change it
FORMAT_VERSION = 1


def write_safetensors_atomic(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (:func:`~tucker_init.files.atomic_write`): an
    interrupted write never leaves a half-written file at ``path``."""
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Metadata and tensors of the safetensors file ``path`` (a ``what``: "template file",
    "model file"), every floating-point tensor checked to be finite.

    Raises:
        FileNotFoundError: no such file. ValueError: not readable as safetensors, or a tensor
            holding NaN / Inf (named, with the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as err:  # safetensors raises its own error types for broken headers
        raise ValueError(f"{str(path)!r} is not a readable {what} (truncated or not safetensors): {err}") from err
    check_finite(tensors.items(), kind="tensor", where=f" in {str(path)!r}")
    return metadata, tensors


def save_template(path: str | os.PathLike, template: FactorizedModel | WeightTemplate) -> Path:
    """Write ``template`` (or a factorized model's template) atomically to ``path``.

    Returns:
        The path written.
    """
    if isinstance(template, FactorizedModel):
        template = WeightTemplate.from_model(template)
    if not isinstance(template, WeightTemplate):
        raise TypeError(f"template must be a FactorizedModel or WeightTemplate, found {type(template).__name__}")
    tensors: dict[str, Tensor] = {}
    for k, v in template.template.items():
        tensors[f"template.{k}"] = v.contiguous()
    for i, scalers in enumerate(template.scalers):
        for k, v in scalers.items():
            tensors[f"scalers.g{i}.{k}"] = v.contiguous()
    for k, v in template.remainder.items():
        tensors[f"remainder.{k}"] = v.contiguous()
    for k, v in template.buffers.items():
        tensors[f"buffer.{k}"] = v.contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "library_version": template.library_version,
        "config": json.dumps(template.config.to_dict()),
        "layout": json.dumps(template.layout.to_dict()),
        "backbone": json.dumps(template.backbone),
    }
    path = Path(path)
    write_safetensors_atomic(path, tensors, metadata)
    return path


def _format_version(path: Path, metadata: dict[str, str]) -> int:
    text = metadata.get("format_version")
    try:
        version = int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{str(path)!r}: format_version must be an int, found {text!r}") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has template format version {version}; this tucker_init reads up to "
            f"{FORMAT_VERSION}; upgrade tucker_init"
        )
    return version


def _check_template_tensors(path: Path, config: TemplateConfig, layout: ModelLayout, tensors: dict) -> None:
    """The template and scaler tensors are exactly those ``config`` and ``layout`` call for."""
    expected = template_shapes(layout, config)
    found = {k: v for k, v in tensors.items() if k.startswith(("template.", "scalers."))}
    for key, shape in expected.items():
        if key not in found:
            raise ValueError(f"{str(path)!r}: missing tensor {key!r} (expected shape {shape})")
        tensor = found[key]
        if not tensor.is_floating_point():
            raise ValueError(f"{str(path)!r}: {key!r} has dtype {tensor.dtype}, expected a floating-point dtype")
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"{str(path)!r}: {key!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise ValueError(f"{str(path)!r}: unexpected tensor {unexpected[0]!r} for a {config.method} template")


def load_template(
    path: str | os.PathLike, model: nn.Module | None = None, adapter: BackboneAdapter | None = None
) -> WeightTemplate | FactorizedModel:
    """Read a template file.

    Args:
        path: a file written by :func:`save_template`.
        model: optional; when given, the template must have been made for this very
            architecture (same family and layout) and a :class:`FactorizedModel` on ``model``
            with the stored values is returned.
        adapter: for ``model``, when it needs a :class:`~backbones.GenericAdapter`.

    Returns:
        A :class:`WeightTemplate`, or a :class:`FactorizedModel` when ``model`` is given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a template file, a newer format, inconsistent contents, or a
            template for another backbone than ``model``; the message says what differs.
    """
    path = Path(path)
    metadata, tensors = read_safetensors(path, "template file")
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is a safetensors file but not a tucker_init template "
            f"(format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    _format_version(path, metadata)
    try:
        config = TemplateConfig.from_dict(json.loads(metadata["config"]))
        layout = ModelLayout.from_dict(json.loads(metadata["layout"]))
        backbone = json.loads(metadata["backbone"])
        _check_template_tensors(path, config, layout, tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # json.JSONDecodeError is a ValueError
        if str(path) in str(err):
            raise
        what = f"missing field {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise ValueError(f"{str(path)!r}: damaged template metadata: {what}") from err

    def section(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    scalers = [section(f"scalers.g{i}.") for i in range(len(layout.groups))]
    result = WeightTemplate(
        config=config,
        layout=layout,
        template=section("template."),
        scalers=scalers,
        remainder=section("remainder."),
        buffers=section("buffer."),
        backbone=backbone,
        library_version=metadata.get("library_version", ""),
    )
    return result if model is None else to_factorized(result, model, adapter)


def _layout_difference(expected: ModelLayout, found: ModelLayout) -> str:
    if expected.family != found.family:
        return f"backbone family {expected.family!r} in the template, {found.family!r} in the model"
    if len(expected.groups) != len(found.groups):
        return f"{len(expected.groups)} block groups in the template, {len(found.groups)} in the model"
    for a, b in zip(expected.groups, found.groups, strict=True):
        if a != b:
            return f"group {a.name!r} {a.shape} in the template, {b.name!r} {b.shape} in the model"
    return ""


def to_factorized(
    template: WeightTemplate, model: nn.Module, adapter: BackboneAdapter | None = None
) -> FactorizedModel:
    """A :class:`FactorizedModel` on ``model`` holding the template's stored values.

    Args:
        adapter: needed for a model that only a :class:`~backbones.GenericAdapter` understands.

    Raises:
        ValueError: ``model`` is not the architecture the template was made for.
    """
    adapter = get_adapter(model, adapter)
    layout = build_layout(model, adapter)
    difference = _layout_difference(template.layout, layout)
    if difference:
        raise ValueError(
            f"template does not fit this model: {difference}. To start a model of another size "
            "from this template use tucker_init.initialize()"
        )
    fm = FactorizedModel(copy.deepcopy(model), layout, template.config, template.template, template.scalers, adapter)
    own = dict(fm.backbone.named_parameters()) | dict(fm.backbone.named_buffers())
    with torch.no_grad():
        for name, value in (template.remainder | template.buffers).items():
            if name not in own or own[name].shape != value.shape:
                raise ValueError(f"template parameter {name!r} {tuple(value.shape)} does not fit the model")
            own[name].copy_(value)
    return fm.train(model.training)


def write_model_card(path: str | os.PathLike, template: WeightTemplate, facts: dict[str, Any]) -> Path:
    """Write ``README.md`` beside the template file ``path``: a model card (Hugging Face format:
    YAML front matter, then text) saying what the template is and how it was made, so the folder
    can be uploaded as it is (``huggingface_hub.upload_folder``).

    Args:
        facts: how it was made, e.g. ``{"objective": "MAE", "data": "fashion_mnist",
            "steps": 1000, "command": "tucker-init pretrain ..."}``; written as a table.
    """
    path = Path(path)
    groups = ", ".join(f"{g.name} {g.shape}" for g in template.layout.groups)
    rows = {
        "source model": f"{template.family} ({template.backbone.get('class', '?')})",
        "method": template.config.method,
        "ranks": ", ".join(str(tuple(r)) for r in sorted(set(template.config.ranks))),
        "groups (S*L, d, d)": groups,
        "template parameters": sum(t.numel() for t in template.template.values()),
        **facts,
        "library": f"tucker_init {template.library_version}",
    }
    lines = [
        "---",
        "library_name: tucker_init",
        "tags: [weight-template, tucker, initialization, timm]",
        "---",
        f"# {path.stem}: a {template.config.method} weight template",
        "",
        f"Initializes vision models of other depths and widths: `tucker_init.initialize(target_model, {path.name!r})`.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows.items()),
        "",
    ]
    card = path.parent / "README.md"
    atomic_write(card, lambda tmp: Path(tmp).write_text("\n".join(lines)))
    return card
