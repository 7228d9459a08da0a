"""The plan of a resize: which template group serves which target group, with which depth and
width maps, and how every remainder tensor is mapped (DESIGN.md 1.4).

:func:`plan_resize` does all the checking (families, block structure, the adapter's size rules,
ranks against widths) once; the :class:`ResizePlan` it returns depends only on the template's
and the target's structure, not on their values, so one plan serves every call of
:func:`~tucker_init.resize.target_weights.target_weights` while the template trains.

When one block sequence holds groups of different unit widths (a ResNet stage: its first block
has d = gcd(in, out), the rest d = out), per-group maps would disagree on the shared channels;
then every group maps each chunk of the common unit u = gcd(all d) alike (see
:func:`_unit_width_maps`), which needs one width factor for the whole model.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter

from ..templates.factorized import FactorizedModel
from ..templates.kinds import get_kind
from ..templates.layout import GroupLayout, ModelLayout, build_layout
from ..templates.template import TemplateConfig, WeightTemplate, template_keys
from ..validation import check_choice, check_materialized
from .axis_maps import AxisMap, depth_map, width_map
from .new_blocks import NewBlock, plan_new_blocks
from .remainder import RemainderPlan, Unit, plan_remainder
from .report import init_state

__all__ = [
    "PLAN_DEPTH_RULES",
    "PLAN_WIDTH_RULES",
    "GroupMatch",
    "ResizePlan",
    "SourceTensors",
    "match_groups",
    "plan_resize",
    "source_tensors",
]

PLAN_DEPTH_RULES = ("select", "first", "interpolate", "identity")
PLAN_WIDTH_RULES = ("slice", "select", "interpolate", "zero_fanout")
"""The rules a plan resizes by; ``learn`` is :func:`~tucker_init.initialize`'s (it trains the
scalers, starting from ``interpolate`` / ``slice``)."""


# ------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class SourceTensors:
    """What a resize reads from a template or a live factorized model (no copies).

    Attributes:
        config, layout: the template's.
        template: template tensors by key (Tucker cores ``(r1, r2, r3)``, Kronecker ``(k, a, b)``).
        scalers: per group, ``X (S*L, r1)``, ``U (d, r2)``, ``V (d, r3)`` or ``S (S*L, k, d/a, d/b)``.
        state: the dense remainder parameters and float buffers by state-dict key.
    """

    config: TemplateConfig
    layout: ModelLayout
    template: Mapping[str, Tensor]
    scalers: tuple[Mapping[str, Tensor], ...]
    state: Mapping[str, Tensor]


def source_tensors(source: WeightTemplate | FactorizedModel) -> SourceTensors:
    """The tensors of ``source``; for a :class:`FactorizedModel` its live parameters (gradients
    flow back into them), for a :class:`WeightTemplate` its stored tensors."""
    if isinstance(source, FactorizedModel):
        scalers = tuple(dict(source.scalers[f"g{i}"].items()) for i in range(len(source.layout.groups)))
        state = dict(source.backbone.named_parameters())
        state.update({k: v for k, v in source.backbone.named_buffers() if v.is_floating_point()})
        return SourceTensors(source.config, source.layout, dict(source.template.items()), scalers, state)
    if isinstance(source, WeightTemplate):
        state = {**source.remainder, **source.buffers}
        return SourceTensors(source.config, source.layout, source.template, tuple(source.scalers), state)
    raise TypeError(
        f"source must be a WeightTemplate or a FactorizedModel, found {type(source).__name__} "
        "(load a template file with tucker_init.load_template)"
    )


def _facts(source: WeightTemplate | FactorizedModel) -> Mapping[str, Any]:
    """The source model's size facts (``adapter.describe``), as a template file records them."""
    if isinstance(source, FactorizedModel):
        return {"family": source.layout.family, **source.adapter.describe(source.backbone)}
    return source.backbone


# ---------------------------------------------------------------------------------- matching
_GROUP_NAME = re.compile(r"^(?P<seq>.*)\[(?P<start>\d+):(?P<stop>\d+)\]$")


def _sequence(group: GroupLayout) -> str:
    m = _GROUP_NAME.match(group.name)
    return m.group("seq") if m else group.name


def _slot_structure(group: GroupLayout) -> list[tuple[str, tuple[int, ...]]]:
    """Per slot: name and ``(a, b, kh, kw)``, the size-free structure of the block."""
    return [(s.name, (*s.blocks(group.width), *s.shape[2:])) for s in group.slots]


@dataclass(frozen=True)
class GroupMatch:
    """Template group ``source`` serves target group ``target``; ``depth`` maps L -> L' blocks,
    ``width`` maps d -> d' channels."""

    source: int
    target: int
    depth: AxisMap
    width: AxisMap

    def to(self, device: torch.device | str) -> GroupMatch:
        return replace(self, depth=self.depth.to(device), width=self.width.to(device))


def match_groups(source: ModelLayout, target: ModelLayout) -> list[tuple[int, int]]:
    """Pair template groups with target groups by block-sequence name and position.

    The k-th group of a target sequence (e.g. ``layer2``: its first block, then the rest) is
    served by the k-th group of the template's sequence of the same name; their blocks must
    have the same templated weights in the same proportions.

    Returns:
        ``[(source_index, target_index), ...]`` for every target group.

    Raises:
        ValueError: families differ, a sequence or group has no counterpart, or blocks differ.
    """
    if source.family != target.family:
        raise ValueError(
            f"the template is for backbone family {source.family!r}, the target is {target.family!r}; "
            f"initialize a {source.family!r} model or use a template made on a {target.family!r} model"
        )
    by_seq: dict[str, list[int]] = {}
    for i, g in enumerate(source.groups):
        by_seq.setdefault(_sequence(g), []).append(i)
    position: dict[str, int] = {}
    pairs = []
    for j, g in enumerate(target.groups):
        seq = _sequence(g)
        if seq not in by_seq:
            raise ValueError(
                f"target block sequence {seq!r} has no counterpart in the template, whose sequences are {list(by_seq)}"
            )
        k = position.get(seq, 0)
        position[seq] = k + 1
        if k >= len(by_seq[seq]):
            names = [source.groups[i].name for i in by_seq[seq]]
            raise ValueError(
                f"target sequence {seq!r} has more groups of distinct blocks than the template's {names}; "
                f"target group {g.name!r} cannot be matched"
            )
        i = by_seq[seq][k]
        src_structure, tgt_structure = _slot_structure(source.groups[i]), _slot_structure(g)
        if src_structure != tgt_structure:
            raise ValueError(
                f"target group {g.name!r} does not match template group {source.groups[i].name!r}: "
                f"templated weights as (name, (a, b, kh, kw)) in units of the width d are "
                f"{tgt_structure} in the target and {src_structure} in the template; the target's blocks "
                "must have the template's layers in the same proportions (e.g. the same mlp ratio)"
            )
        pairs.append((i, j))
    return pairs


def _group_matches(
    config: TemplateConfig, source: ModelLayout, target: ModelLayout, depth: str, width: str
) -> tuple[list[GroupMatch], Unit | None]:
    """The group matches, and ``(u, u', rule)`` when all widths follow one unit map (else None)."""
    matches = []
    for i, j in match_groups(source, target):
        g, h = source.groups[i], target.groups[j]
        get_kind(config.method).check_width(config.ranks[i], h.name, g.width, h.width, width)
        matches.append(GroupMatch(i, j, depth_map(g.depth, h.depth, depth), width_map(g.width, h.width, width)))

    if any(source.groups[m.source].width != target.groups[m.target].width for m in matches) and any(
        len({g.width for g in source.groups if _sequence(g) == seq}) > 1 for seq in map(_sequence, source.groups)
    ):
        return _unit_width_maps(config, source, target, matches, width)
    return matches, None


def _unit_width_maps(
    config: TemplateConfig, source: ModelLayout, target: ModelLayout, matches: list[GroupMatch], width: str
) -> tuple[list[GroupMatch], Unit]:
    """Width maps that keep channels aligned when one sequence has groups of different unit widths.

    A ResNet stage's first block has d = gcd(in, out) (e.g. 16 for 16 -> 32 channels) and the rest
    d = 32: slicing each group's own d would keep channels {0..7, 16..23} in one and {0..15} in the
    other. Instead every group maps each chunk of the common unit u = gcd(all d) the same way,
    ``width_map(u, u')`` tiled d / u times, so all groups (and the stem, head and down-sampling
    tensors between them) agree on every channel. Needs one width factor u' / u for all groups;
    remainder axes narrower than u (a deep stem's 32 channels when u = 64) scale by it too.
    """
    widths = [(source.groups[m.source].width, target.groups[m.target].width) for m in matches]
    now = {source.groups[m.source].name: pair for m, pair in zip(matches, widths, strict=True)}
    if not get_kind(config.method).unit_width_maps():
        raise ValueError(
            f"width changes of {config.method.capitalize()} templates need one unit width per block sequence; "
            f"this template's groups have unit widths (template -> target) {now}. Initialize targets of the "
            "template's own widths (any depth), or use a Tucker template"
        )
    unit = math.gcd(*(d for d, _ in widths))
    new_units = {d_new * unit / d for d, d_new in widths}
    if len(new_units) != 1 or not float(next(iter(new_units))).is_integer():
        raise ValueError(
            "the template's block sequences have groups of different unit widths, so a width change must "
            f"scale every group by one factor f with f * {unit} an integer (e.g. all channels halved); found "
            f"unit widths (template -> target) {now}"
        )
    unit_new = int(next(iter(new_units)))
    base = width_map(unit, unit_new, width)
    tiled = [GroupMatch(m.source, m.target, m.depth, base.tile(source.groups[m.source].width // unit)) for m in matches]
    return tiled, (unit, unit_new, width)


# ------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True, eq=False)
class ResizePlan:
    """Everything about resizing one template onto one target that does not depend on values.

    Attributes:
        source_config, source_layout: the template's (a source must have these to use the plan).
        target_layout: the target's groups.
        config: the target's :class:`TemplateConfig` (each group's ranks from its template group).
        matches: per target group, its template group and depth / width maps.
        unit: ``(u, u', rule)`` when all widths follow one unit map (ResNet stages), else ``None``.
        adapter: the target's backbone adapter.
        depth, width: the rules (see :data:`PLAN_DEPTH_RULES`, :data:`PLAN_WIDTH_RULES`).
        template_keys: ``(source key, target key)`` of every template tensor the target uses.
        remainder: how the non-templated tensors are mapped.
        new_blocks: the blocks depth ``identity`` adds (start as the identity), else empty.
    """

    source_config: TemplateConfig
    source_layout: ModelLayout
    target_layout: ModelLayout
    config: TemplateConfig
    matches: tuple[GroupMatch, ...]
    unit: Unit | None
    adapter: BackboneAdapter
    depth: str
    width: str
    template_keys: tuple[tuple[str, str], ...]
    remainder: RemainderPlan
    new_blocks: tuple[NewBlock, ...] = ()

    def entries(self) -> dict[str, str]:
        """What the report says per target tensor: the remainder's entries, then ``template``;
        ``new-block`` for the tensors of a block that depth ``identity`` added."""
        out = dict(self.remainder.entries)
        out.update(dict.fromkeys(sorted(self.target_layout.templated_names()), "template"))
        for block in self.new_blocks:
            out.update(
                {k: "new-block" for k, v in out.items() if k.startswith(block.name + ".") and v != "target-init"}
            )
        return out

    def to(self, device: torch.device | str) -> ResizePlan:
        """The plan with its index tensors on ``device``: for a source on an accelerator, so that
        each call does not copy them there again."""
        matches = tuple(m.to(device) for m in self.matches)
        return replace(self, matches=matches, remainder=self.remainder.to(device))

    def check_source(self, source: SourceTensors) -> None:
        """Raise ValueError when ``source`` is not a template of the structure planned for."""
        if source.layout is self.source_layout and source.config is self.source_config:
            return  # the per-step case: the very objects the plan was made from
        if source.layout != self.source_layout or source.config != self.source_config:
            raise ValueError(
                "plan was made for another template (its groups or ranks differ from the source's); "
                "make it with plan_resize(source, target)"
            )


def _target_template_keys(
    source: ModelLayout,
    source_config: TemplateConfig,
    target: ModelLayout,
    config: TemplateConfig,
    matches: Sequence[GroupMatch],
) -> tuple[tuple[str, str], ...]:
    """Per-group cores follow their matched template group (Tucker ``g{i}``, Kronecker components)."""
    src_keys, tgt_keys = template_keys(source, source_config), template_keys(target, config)
    pairs: dict[str, str] = {}
    for m in matches:
        for src_key, tgt_key in zip(src_keys[m.source], tgt_keys[m.target], strict=True):
            pairs[tgt_key] = src_key
    return tuple((s, t) for t, s in pairs.items())


def _resolve_adapter(target: nn.Module, family: str, adapter: BackboneAdapter | str | None) -> BackboneAdapter:
    if adapter is None and family == "generic":
        raise ValueError(
            "the template was made with a GenericAdapter: pass the target's adapter, "
            "initialize(..., adapter=GenericAdapter(block_containers=[...]))"
        )
    found = get_adapter(target, adapter)
    if found.family != family:
        raise ValueError(
            f"the template is for backbone family {family!r}, the target "
            f"{type(target).__name__} is {found.family!r}; initialize a {family!r} model or use "
            f"a template made on a {found.family!r} model"
        )
    return found


def plan_resize(
    source: WeightTemplate | FactorizedModel,
    target: nn.Module,
    depth: str = "interpolate",
    width: str = "slice",
    adapter: BackboneAdapter | str | None = None,
) -> ResizePlan:
    """Check that ``target`` can be initialized from ``source`` and plan how (DESIGN.md 1.4).

    Args:
        source: a :class:`~tucker_init.WeightTemplate` or a :class:`~tucker_init.FactorizedModel`.
        target: a model of the source's family, of any depth and width; it is not modified.
        depth: ``"select"`` | ``"first"`` | ``"interpolate"`` | ``"identity"``: how the L layers of a
            group become L' (``identity``: ``first``, or deeper the template's layers in order with new
            blocks between them that start as the identity, see :mod:`~tucker_init.resize.new_blocks`).
        width: ``"slice"`` | ``"select"`` | ``"interpolate"`` | ``"zero_fanout"``: how d channels
            become d' (``zero_fanout``: ``slice`` whose new channels nothing reads yet).
        adapter: the target's backbone adapter (required for templates of the generic family).

    Returns:
        A :class:`ResizePlan` for :func:`~tucker_init.resize.target_weights.target_weights`.

    Raises:
        TypeError: ``source`` or ``target`` of the wrong type.
        ValueError: a bad rule; a target of another family; sizes the adapter refuses (ViT heads
            that would be split, another mlp ratio); a block structure that cannot be matched; a
            width the template kind cannot reach. Warns when remainder tensors do not fit.
    """
    if not isinstance(target, nn.Module):
        raise TypeError(f"target must be a torch.nn.Module, found {type(target).__name__}")
    for name, rule, rules in (("depth", depth, PLAN_DEPTH_RULES), ("width", width, PLAN_WIDTH_RULES)):
        if rule == "learn":
            raise ValueError(
                f"{name}='learn' trains the scalers, which only initialize(..., learn=...) does; a plan "
                f"resizes by {list(rules)}"
            )
        check_choice(name, rule, rules)
    check_materialized(target, "target")
    tensors = source_tensors(source)
    found = _resolve_adapter(target, tensors.layout.family, adapter)
    found.check_target(_facts(source), target)
    layout = build_layout(target, found)
    matches, unit = _group_matches(tensors.config, tensors.layout, layout, depth, width)
    config = replace(tensors.config, ranks=tuple(tensors.config.ranks[m.source] for m in matches))
    remainder = plan_remainder(tensors.state, tensors.layout, init_state(target), target, layout, matches, found, unit)
    if remainder.note is not None:
        warnings.warn(remainder.note, stacklevel=2)
    keys = _target_template_keys(tensors.layout, tensors.config, layout, config, matches)
    new_blocks = plan_new_blocks([(m.target, m.depth) for m in matches], layout, target, found)
    return ResizePlan(
        tensors.config,
        tensors.layout,
        layout,
        config,
        tuple(matches),
        unit,
        found,
        depth,
        width,
        keys,
        remainder,
        new_blocks,
    )
