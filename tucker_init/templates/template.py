"""The template concept in one place: :class:`TemplateConfig` (kind, ranks, sharing), the keys
and shapes of a template's tensors, :func:`reconstruct_group` (template + scalers -> a group's
unified tensor ``(S*L, d, d)``), and :class:`WeightTemplate`, a template detached from any model
as a template file holds it. What differs between kinds lives in :mod:`tucker_init.templates.kinds`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..validation import check_choice, check_int
from .kinds import get_kind
from .layout import ModelLayout

if TYPE_CHECKING:
    from .factorized import FactorizedModel

__all__ = ["TemplateConfig", "WeightTemplate", "as_template", "reconstruct_group", "template_keys", "template_shapes"]

KRONECKER_SHARING = ("all", "component")


@dataclass(frozen=True)
class TemplateConfig:
    """How a model was factorized.

    Attributes:
        method: the template kind, ``"tucker"`` or ``"kronecker"`` (any registered in
            :mod:`tucker_init.templates.kinds`).
        ranks: Tucker ``(r1, r2, r3)`` per group; Kronecker ``(k, a, b)`` per group.
        share: Tucker: one core G for all groups (else one per group).
        kron_sharing: Kronecker: ``"all"`` slices share the templates (WeiT-like) or each
            ``"component"`` (weight name, e.g. ``attn.qkv.weight``) has its own (WAVE).
    """

    method: str
    ranks: tuple[tuple[int, int, int], ...]
    share: bool = True
    kron_sharing: str = "all"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ranks"] = [list(r) for r in self.ranks]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplateConfig:
        """The inverse of :meth:`to_dict`; every field is checked (a file may be damaged).

        Raises:
            KeyError: a field is missing. TypeError, ValueError: a field has a wrong value.
        """
        ranks = data["ranks"]
        if not isinstance(ranks, list) or not ranks:
            raise ValueError(f"ranks must be a non-empty list of (r1, r2, r3) per group, found {ranks!r}")
        if not isinstance(data["share"], bool):
            raise TypeError(f"share must be a bool, found {data['share']!r}")
        return cls(
            method=get_kind(data["method"]).name,
            ranks=tuple(_rank_triple(r, i) for i, r in enumerate(ranks)),
            share=data["share"],
            kron_sharing=check_choice("kron_sharing", data["kron_sharing"], KRONECKER_SHARING),
        )


def _rank_triple(ranks: Any, group: int) -> tuple[int, int, int]:
    if not isinstance(ranks, list) or len(ranks) != 3:
        raise ValueError(f"ranks of group {group} must have 3 entries, found {ranks!r}")
    r1, r2, r3 = (check_int(f"ranks[{group}][{m}]", r, minimum=1) for m, r in enumerate(ranks))
    return (r1, r2, r3)


def template_keys(layout: ModelLayout, config: TemplateConfig) -> list[list[str]]:
    """For each group, for each slot: the key of the template it uses."""
    return get_kind(config.method).template_keys(layout, config)


def template_shapes(layout: ModelLayout, config: TemplateConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a template of ``config`` on ``layout`` holds, by its key in a template file
    (``template.<key>``, ``scalers.g<i>.<name>``), with its shape."""
    if len(config.ranks) != len(layout.groups):
        raise ValueError(f"config has ranks for {len(config.ranks)} groups, the layout has {len(layout.groups)}")
    return get_kind(config.method).shapes(layout, config)


def reconstruct_group(
    config: TemplateConfig,
    layout: ModelLayout,
    index: int,
    template: Mapping[str, Tensor],
    scalers: Mapping[str, Tensor],
) -> Tensor:
    """Unified tensor ``(S*L, d, d)`` of group ``index`` from a template and its scalers (Tucker:
    ``G x1 X x2 U x3 V``; Kronecker: ``sum_i kron(S_i, T_i)``; see :mod:`tucker_init.templates.kinds`). The
    scalers may be of another size than the layout's (a target of another depth or width): the
    output follows them."""
    return get_kind(config.method).reconstruct(config, layout, index, template, scalers)


@dataclass
class WeightTemplate:
    """A template detached from any model, as stored in a template file.

    Attributes:
        config: method, ranks and sharing.
        layout: the groups of the model the template was trained on.
        template: template tensors by key (Tucker cores ``(r1, r2, r3)`` or Kronecker
            templates ``(k, a, b)``).
        scalers: per group, the scalers of the source model.
        remainder: the source model's dense parameters (outside the template).
        buffers: the source model's floating-point buffers (e.g. BN running statistics).
        backbone: facts about the source model (family, class, depth, widths).
    """

    config: TemplateConfig
    layout: ModelLayout
    template: dict[str, Tensor]
    scalers: list[dict[str, Tensor]]
    remainder: dict[str, Tensor] = field(default_factory=dict)
    buffers: dict[str, Tensor] = field(default_factory=dict)
    backbone: dict[str, Any] = field(default_factory=dict)
    library_version: str = ""

    @property
    def family(self) -> str:
        return self.layout.family

    @classmethod
    def from_model(cls, fm: FactorizedModel) -> WeightTemplate:
        """Detached copies of ``fm``'s template, scalers and remainder."""
        from .. import __version__  # the package imports this module

        def detach(t: Tensor) -> Tensor:
            return t.detach().cpu().clone()

        return cls(
            config=fm.config,
            layout=fm.layout,
            template={k: detach(v) for k, v in fm.template.items()},
            scalers=[{k: detach(v) for k, v in fm.scalers[f"g{i}"].items()} for i in range(len(fm.scalers))],
            remainder={k: detach(v) for k, v in fm.backbone.named_parameters()},
            buffers={k: detach(v) for k, v in fm.backbone.named_buffers() if v.is_floating_point()},
            backbone={"family": fm.layout.family, **fm.adapter.describe(fm.backbone)},
            library_version=__version__,
        )

    def group_tensor(self, index: int, scalers: dict[str, Tensor] | None = None) -> Tensor:
        """Unified tensor ``(S*L, d, d)`` of group ``index``, from the stored scalers or from
        ``scalers`` of another size."""
        use = self.scalers[index] if scalers is None else scalers
        return reconstruct_group(self.config, self.layout, index, self.template, use)


def as_template(template: WeightTemplate | FactorizedModel | str | os.PathLike) -> WeightTemplate:
    """A :class:`WeightTemplate` from a template, a factorized model or a template file."""
    if isinstance(template, WeightTemplate):
        return template
    from .factorized import FactorizedModel  # both modules build on this one
    from .io import load_template

    if isinstance(template, FactorizedModel):
        return WeightTemplate.from_model(template)
    if isinstance(template, str | os.PathLike):
        loaded = load_template(template)
        if not isinstance(loaded, WeightTemplate):  # load_template without a model returns one
            raise ValueError(f"{str(template)!r} did not load as a WeightTemplate")
        return loaded
    raise ValueError(
        "template must be a WeightTemplate, a FactorizedModel or the path of a template file, "
        f"found {type(template).__name__}"
    )
