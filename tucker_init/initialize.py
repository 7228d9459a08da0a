"""initialize(): start a model of another depth and width from a weight template (DESIGN.md 1.4).

Given a template (core ``G`` frozen) made on a source model with groups of depth L and unit width d,
and a target whose matching groups have depth L' and width d', new scalers are derived per group:

- depth, ``X (L*S, r1) -> X' (L'*S, r1)`` (Kronecker: ``S (L*S, k, p, q)`` along L):
  ``select`` takes evenly spaced source layers ``round(linspace(0, L-1, L'))``; ``interpolate``
  interpolates linearly over normalized depth, target layer ``l`` sits at source position
  ``l * (L-1) / (L'-1)``; ``learn`` starts from ``interpolate`` and trains.
- width, ``U (d, r2) -> U' (d', r2)`` and ``V`` alike (Kronecker: the ``p = d/a`` and ``q = d/b``
  axes of S): ``slice`` keeps the first d' rows; for d' > d it keeps all d rows and appends
  ``d' - d`` random rows drawn with each column's standard deviation (Kronecker: S's standard
  deviation), so the new channels have weights of the usual magnitude; ``interpolate`` resamples
  the rows linearly (Tucker only); ``learn`` starts from ``slice`` and trains.

The dense remainder of the source (stem, embeddings, norms, biases, head, block-level vectors) is
mapped with the *same* rules, so the residual stream stays aligned with the templated weights:
a block-level tensor follows the depth map of its group, and each channel axis of size ``a*d``
follows the group's width map applied to each of its ``a`` chunks of d (e.g. the 4 chunks of
a ViT's MLP hidden layer, the 3 of ``qkv.bias``). Channels that the width map creates (d' > d
with ``slice``) keep the target's own initialization. Axes that are not channel axes are resized
by the adapter first (a ViT's position embedding and patch kernel for another image or patch size).

When one block sequence holds groups of different unit widths (a ResNet stage: its first block
has d = gcd(in, out), the rest d = out), per-group maps would disagree on the shared channels;
then every group maps each chunk of the common unit u = gcd(all d) alike (see
``_unit_width_maps``), which needs one width factor for the whole model.

``learn`` optimizes only the new scalers (template and remainder frozen) with Adam on a small
loader, then the dense weights are written into the target: it stays an ordinary model of its
own class with plain parameters.
"""

from __future__ import annotations

import copy
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import BackboneAdapter, get_adapter

from .axis_maps import DEPTH_RULES, WIDTH_RULES, AxisMap, depth_map, width_map
from .factorized import FactorizedModel, master_dtype
from .kinds import get_kind
from .layout import GroupLayout, ModelLayout, build_layout
from .template import TemplateConfig, WeightTemplate, as_template, reconstruct_group, template_keys
from .training import cycle_batches, to_device, train_step
from .validation import as_int, check_choice, check_int, check_materialized

__all__ = [
    "DEPTH_RULES",
    "SOURCES",
    "WIDTH_RULES",
    "AxisMap",
    "GroupMatch",
    "InitReport",
    "LearnConfig",
    "as_template",
    "depth_map",
    "initialize",
    "match_groups",
    "width_map",
]

DEFAULT_LEARN_EPOCHS = 0.16  # SWEET learns new scalers for ~0.16 epoch of the target's data
LOSS_INPUTS = ("output", "model")
SOURCES = ("template", "copied", "selected", "interpolated", "target-init")
"""What :class:`InitReport` says about a target tensor: rebuilt from the ``template``; ``copied``
unchanged from the source's tensor of the same name; ``selected`` from source entries picked by
the depth / width rule (new channels at the target's init); ``interpolated`` from a linear mix
of source entries; ``target-init`` left at the target's own initialization."""


# ------------------------------------------------------------------------------------- report
@dataclass
class InitReport:
    """Where each tensor of the target's state dict came from.

    Attributes:
        method: the initializer's name.
        entries: state-dict key -> one of :data:`SOURCES`.
        shapes: state-dict key -> the target tensor's shape.
        losses: the training loss per step when scalers were learned, else empty.
        notes: free-form remarks (rules used, budget).
    """

    method: str
    entries: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> str:
        return self.entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def items(self) -> Iterable[tuple[str, str]]:
        return self.entries.items()

    def set(self, name: str, source: str, shape: Iterable[int]) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {list(SOURCES)}, found {source!r}")
        self.entries[name] = source
        self.shapes[name] = tuple(shape)

    def counts(self) -> dict[str, int]:
        """How many tensors came from each source."""
        out = dict.fromkeys(SOURCES, 0)
        for source in self.entries.values():
            out[source] += 1
        return {k: v for k, v in out.items() if v}

    def names(self, source: str) -> list[str]:
        """The tensors that came from ``source``."""
        return [k for k, v in self.entries.items() if v == source]

    def table(self) -> str:
        """A plain-text table: parameter, shape, source; then the counts."""
        rows = [(k, "x".join(map(str, self.shapes.get(k, ()))) or "-", v) for k, v in self.entries.items()]
        w0 = max([len("parameter")] + [len(r[0]) for r in rows])
        w1 = max([len("shape")] + [len(r[1]) for r in rows])
        lines = [f"InitReport ({self.method})", f"{'parameter':<{w0}}  {'shape':<{w1}}  source"]
        lines.append("-" * (w0 + w1 + 16))
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
        lines.append("counts: " + ", ".join(f"{k}={v}" for k, v in self.counts().items()))
        if self.losses:
            lines.append(
                f"learned scalers: {len(self.losses)} steps, loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}"
            )
        lines += self.notes
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# ------------------------------------------------------------------------------------- learn
@dataclass
class LearnConfig:
    """Budget and data for learning new scalers (template and remainder frozen).

    Attributes:
        data: iterable of batches ``(x float (B, 3, H, W), y int64 (B,))``, re-iterated when
            exhausted; needs ``__len__`` (batches per epoch) when ``epochs`` is used.
        steps: number of optimizer steps; or
        epochs: a budget in (fractions of) epochs, ``steps = max(1, round(epochs * len(data)))``.
            Give at most one of ``steps`` / ``epochs``; with neither, ``epochs=0.16``, the
            budget SWEET uses.
        lr: Adam learning rate for the scalers.
        loss: ``loss(output, batch) -> scalar`` (``loss_on="output"``, output = ``model(x)``) or
            ``loss(model, batch) -> scalar`` (``loss_on="model"``; ``model`` is the
            :class:`~tucker_init.FactorizedModel`, callable like the target and with ``.call``).
            Default: cross-entropy of the target's logits against ``y``.
        loss_on: ``"output"`` or ``"model"``, see ``loss``.
        progress: show a tqdm progress bar.
        device: where to train; default the target's device.
    """

    data: Iterable[Any]
    steps: int | None = None
    epochs: float | None = None
    lr: float = 1e-3
    loss: Callable[..., Tensor] | None = None
    loss_on: str = "output"
    progress: bool = True
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, Iterable):
            raise ValueError(f"learn.data must be an iterable of (x, y) batches, found {type(self.data).__name__}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError(
                f"learn takes one budget: steps (int > 0) or epochs (float > 0; default {DEFAULT_LEARN_EPOCHS}), "
                f"found steps={self.steps!r}, epochs={self.epochs!r}"
            )
        if self.steps is None and self.epochs is None:
            self.epochs = DEFAULT_LEARN_EPOCHS
        if self.steps is not None:
            steps = as_int(self.steps)
            if steps is None or steps < 1:
                raise ValueError(f"learn.steps must be a positive int, found {self.steps!r}")
            self.steps = steps
        if self.epochs is not None:
            if isinstance(self.epochs, bool) or not isinstance(self.epochs, int | float) or not self.epochs > 0:
                raise ValueError(f"learn.epochs must be a positive number, found {self.epochs!r}")
            if not hasattr(self.data, "__len__"):
                raise ValueError(
                    "learn.epochs needs len(learn.data) (batches per epoch); "
                    f"{type(self.data).__name__} has no __len__: pass steps instead"
                )
            if len(self.data) < 1:  # type: ignore[arg-type]
                raise ValueError("learn.data must hold at least one batch, found len(data) == 0")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learn.lr must be a positive finite number, found {self.lr!r}")
        if self.loss is not None and not callable(self.loss):
            raise ValueError(f"learn.loss must be callable or None, found {type(self.loss).__name__}")
        check_choice("learn.loss_on", self.loss_on, LOSS_INPUTS)
        if self.loss_on == "model" and self.loss is None:
            raise ValueError("learn.loss_on='model' needs learn.loss(model, batch) -> scalar, found loss=None")

    @property
    def num_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round(self.epochs * len(self.data)))  # type: ignore[arg-type, operator]

    @classmethod
    def coerce(cls, value: LearnConfig | Mapping[str, Any] | None) -> LearnConfig | None:
        """Accept a LearnConfig, a dict of its fields, or None."""
        if value is None or isinstance(value, LearnConfig):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"learn has unknown key(s) {unknown}; expected keys from {known}")
            if "data" not in value:
                raise ValueError("learn must give 'data': an iterable of (x, y) batches")
            return cls(**value)
        raise ValueError(f"learn must be a LearnConfig, a dict or None, found {type(value).__name__}")


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


# --------------------------------------------------------------------------------- templates
def _resolve_adapter(
    target: nn.Module, template: WeightTemplate, adapter: BackboneAdapter | str | None
) -> BackboneAdapter:
    if adapter is None and template.family == "generic":
        raise ValueError(
            "the template was made with a GenericAdapter: pass the target's adapter, "
            "initialize(..., adapter=GenericAdapter(block_containers=[...]))"
        )
    found = get_adapter(target, adapter)
    if found.family != template.family:
        raise ValueError(
            f"the template is for backbone family {template.family!r}, the target "
            f"{type(target).__name__} is {found.family!r}; initialize a {template.family!r} model or use "
            f"a template made on a {found.family!r} model"
        )
    return found


def _check_vit(template: WeightTemplate, target: nn.Module, adapter: BackboneAdapter) -> None:
    """ViT-specific size checks with messages that name the sizes that work."""
    facts = template.backbone
    if "head_dim" not in facts:
        return
    described = adapter.describe(target)
    head_dim = int(facts["head_dim"])
    tgt_head = adapter.width_multiple(target)
    if tgt_head != head_dim:
        width = described.get("embed_dim", "?")
        raise ValueError(
            f"the target's heads (head_dim {tgt_head}, embed_dim {width}) would split the template's "
            f"heads of head_dim {head_dim}: use num_heads = embed_dim / {head_dim}, i.e. widths "
            f"{[head_dim * h for h in range(1, 7)]}..."
        )
    if "mlp_hidden" in facts and "mlp_hidden" in described:
        src_ratio = facts["mlp_hidden"] / facts["embed_dim"]
        tgt_ratio = described["mlp_hidden"] / described["embed_dim"]
        if src_ratio != tgt_ratio:
            raise ValueError(
                f"different mlp ratio: the template's is {src_ratio:g}, the target's {tgt_ratio:g}; "
                f"create the target with mlp_ratio={src_ratio:g} (mlp hidden size "
                f"{int(src_ratio * described['embed_dim'])} for embed_dim {described['embed_dim']})"
            )


def _plan(
    template: WeightTemplate, source: ModelLayout, target: ModelLayout, depth: str, width: str
) -> tuple[list[GroupMatch], tuple[int, int, str] | None]:
    """The group matches, and ``(u, u', rule)`` when all widths follow one unit map (else None)."""
    pairs = match_groups(source, target)
    config = template.config
    matches = []
    for i, j in pairs:
        g, h = source.groups[i], target.groups[j]
        d, d_new = g.width, h.width
        get_kind(config.method).check_width(config.ranks[i], h.name, d, d_new, width)
        matches.append(GroupMatch(i, j, depth_map(g.depth, h.depth, depth), width_map(d, d_new, width)))

    if any(source.groups[m.source].width != target.groups[m.target].width for m in matches) and any(
        len({g.width for g in source.groups if _sequence(g) == seq}) > 1 for seq in map(_sequence, source.groups)
    ):
        return _unit_width_maps(config, source, target, matches, width)
    return matches, None


def _unit_width_maps(
    config: TemplateConfig, source: ModelLayout, target: ModelLayout, matches: list[GroupMatch], width: str
) -> tuple[list[GroupMatch], tuple[int, int, str]]:
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


def _new_scalers(
    template: WeightTemplate,
    match: GroupMatch,
    source: GroupLayout,
    target: GroupLayout,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Scalers of the target group: depth map on the layer axis, width map on the channel axes."""
    kind = get_kind(template.config.method)
    ranks = template.config.ranks[match.source]
    scalers = template.scalers[match.source]
    return kind.resize_scalers(scalers, ranks, match.depth, match.width, source, target, generator)


def _target_template(
    template: WeightTemplate, config: TemplateConfig, target: ModelLayout, matches: list[GroupMatch]
) -> dict[str, Tensor]:
    """Template tensors keyed as the target's FactorizedModel expects (per-group cores follow
    their matched template group)."""
    source_keys = template_keys(template.layout, template.config)
    target_keys = template_keys(target, config)
    out: dict[str, Tensor] = {}
    for m in matches:
        for src_key, tgt_key in zip(source_keys[m.source], target_keys[m.target], strict=True):
            out[tgt_key] = template.template[src_key]
    return out


# --------------------------------------------------------------------------------- remainder
def _axis_maps_for(
    src_shape: tuple[int, ...],
    tgt_shape: tuple[int, ...],
    candidates: list[tuple[int, int, AxisMap]],
    unit: tuple[int, int, str] | None = None,
) -> list[AxisMap | None] | None:
    """Per axis: ``None`` (same size, identity) or the width map of a ``(d, d', map)`` candidate
    whose chunk count fits, else (with ``unit = (u, u', rule)``) ``width_map(n, n u'/u, rule)``;
    the whole tensor is ``None`` when some axis cannot be mapped."""
    if len(src_shape) != len(tgt_shape):
        return None
    maps: list[AxisMap | None] = []
    for n, n_new in zip(src_shape, tgt_shape, strict=True):
        if n == n_new:
            maps.append(None)
            continue
        fits = [(n // d, wmap) for d, d_new, wmap in candidates if n % d == 0 and n_new == (n // d) * d_new]
        if not fits and unit is not None and n * unit[1] == n_new * unit[0]:
            fits = [(1, width_map(n, n_new, unit[2]))]
        if not fits:
            return None
        fits.sort(key=lambda c: c[0])  # prefer a = 1: a residual-stream axis, not an inner chunked one
        maps.append(fits[0][1].tile(fits[0][0]))
    return maps


def _map_tensor(value: Tensor, maps: list[AxisMap | None], current: Tensor) -> tuple[Tensor, bool, bool]:
    """Apply per-axis maps; fresh channels take ``current`` (the target's init).

    Returns:
        ``(mapped, interpolated, changed)``: whether any axis interpolated / was not the identity.
    """
    fresh = torch.zeros(current.shape, dtype=torch.bool)
    interpolated = changed = False
    for dim, amap in enumerate(maps):
        if amap is None:
            continue
        value = amap.apply(value, dim)
        interpolated |= not amap.is_selection
        changed |= not amap.is_identity
        if amap.fresh.any():
            shape = [1] * current.ndim
            shape[dim] = -1
            fresh = fresh | amap.fresh.view(shape)
    value = value.to(device=current.device, dtype=current.dtype)
    if fresh.any():
        value = torch.where(fresh.to(current.device), current, value)
    return value, interpolated, changed


def _target_state(target: nn.Module) -> dict[str, Tensor]:
    """Parameters and floating-point buffers, by state-dict key."""
    state = dict(target.named_parameters())
    state.update({k: v for k, v in target.named_buffers() if v.is_floating_point()})
    return state


# A mapped remainder tensor: (value or None, its report entry, the source shape that did not fit or None).
_Mapped = tuple[Tensor | None, str, tuple[int, ...] | None]


def _map_global(
    name: str,
    current: Tensor,
    source_state: Mapping[str, Tensor],
    target: nn.Module,
    adapter: BackboneAdapter,
    candidates: list[tuple[int, int, AxisMap]],
    unit: tuple[int, int, str] | None,
) -> _Mapped:
    """A tensor outside the blocks (stem, embeddings, final norm, head), by the same name."""
    src = source_state.get(name)
    if src is None:
        return None, "target-init", None
    resized = adapter.resize_remainder(target, name, src)
    if resized is not None:  # e.g. a position embedding on another patch grid
        src = resized
    maps = _axis_maps_for(tuple(src.shape), tuple(current.shape), candidates, unit)
    if maps is None:
        return None, "target-init", tuple(src.shape)
    value, interp, changed = _map_tensor(src, maps, current)
    interp |= resized is not None
    return value, "interpolated" if interp else ("selected" if changed else "copied"), None


def _map_block(
    name: str,
    current: Tensor,
    source_state: Mapping[str, Tensor],
    template: WeightTemplate,
    target_layout: ModelLayout,
    block: str,
    m: GroupMatch,
    l_new: int,
) -> _Mapped:
    """A block-level tensor: depth map over the matched template group's blocks, then the
    group's own width map (tiled over each axis's chunks of d)."""
    rel = name[len(block) + 1 :]
    src_blocks = template.layout.groups[m.source].block_names
    lo, hi, t = int(m.depth.lo[l_new]), int(m.depth.hi[l_new]), float(m.depth.t[l_new])
    a_name, b_name = f"{src_blocks[lo]}.{rel}", f"{src_blocks[hi]}.{rel}"
    if a_name not in source_state or (t and b_name not in source_state):
        return None, "target-init", None
    src = source_state[a_name]
    if t:
        other = source_state[b_name]
        if other.shape != src.shape:
            return None, "target-init", tuple(other.shape)
        src = src * (1 - t) + other * t
    g_src, g_tgt = template.layout.groups[m.source], target_layout.groups[m.target]
    maps = _axis_maps_for(tuple(src.shape), tuple(current.shape), [(g_src.width, g_tgt.width, m.width)])
    if maps is None:
        return None, "target-init", tuple(src.shape)
    value, interp, changed = _map_tensor(src, maps, current)
    if t or interp:
        return value, "interpolated", None
    return value, "selected" if changed or a_name != name else "copied", None


def _enclosing_block(name: str, blocks: Mapping[str, Any]) -> str | None:
    """The longest block path that is a prefix of the parameter ``name``."""
    block = name.rpartition(".")[0]
    while block and block not in blocks:
        block = block.rpartition(".")[0]
    return block or None


def _map_remainder(
    template: WeightTemplate,
    target: nn.Module,
    target_layout: ModelLayout,
    matches: list[GroupMatch],
    report: InitReport,
    adapter: BackboneAdapter,
    unit: tuple[int, int, str] | None = None,
) -> dict[str, Tensor]:
    """The target's dense tensors mapped from the template's remainder, by name. Tensors the
    template holds but that do not fit the target keep the target's init, with a warning."""
    source_state = {**template.remainder, **template.buffers}
    templated = target_layout.templated_names()
    block_of: dict[str, tuple[GroupMatch, int]] = {}
    for m in matches:
        for l_new, block in enumerate(target_layout.groups[m.target].block_names):
            block_of[block] = (m, l_new)
    candidates = [
        (template.layout.groups[m.source].width, target_layout.groups[m.target].width, m.width) for m in matches
    ]
    out: dict[str, Tensor] = {}
    misfits: list[str] = []
    for name, current in _target_state(target).items():
        if name in templated:
            continue
        block = _enclosing_block(name, block_of)
        if block is None:
            value, source, misfit = _map_global(name, current, source_state, target, adapter, candidates, unit)
        else:
            value, source, misfit = _map_block(
                name, current, source_state, template, target_layout, block, *block_of[block]
            )
        report.set(name, source, current.shape)
        if value is not None:
            out[name] = value
        if misfit is not None:
            misfits.append(f"{name!r} {misfit} does not fit the target's {tuple(current.shape)}")
    if misfits:
        note = "template tensors not used, the target keeps its own init: " + "; ".join(misfits)
        report.notes.append(note)
        warnings.warn(note, stacklevel=3)
    return out


# -------------------------------------------------------------------------------------- learn
def _learn_loss(learn: LearnConfig) -> Callable[[nn.Module, Any], Tensor]:
    """``loss_fn(model, batch)`` of a learned run: ``learn.loss`` on the model, on its output, or
    cross-entropy of ``(x, y)`` batches."""

    def loss_fn(model: nn.Module, batch: Any) -> Tensor:
        if learn.loss_on == "model":
            return learn.loss(model, batch)  # type: ignore[misc]
        if not (isinstance(batch, tuple | list) and len(batch) >= 2):
            raise ValueError(f"learn.data must yield (x, y) batches for the default loss, found {type(batch).__name__}")
        output = model(batch[0])
        return learn.loss(output, batch) if learn.loss is not None else F.cross_entropy(output, batch[1])

    return loss_fn


def _learn(fm: FactorizedModel, learn: LearnConfig, trainable: set[str], device: torch.device) -> list[float]:
    """Adam on the chosen scalers, one :func:`~tucker_init.training.train_step` per batch;
    returns the loss per step."""
    from tqdm.auto import tqdm

    fm.to(device)
    for p in fm.parameters():
        p.requires_grad_(False)
    params = [p for group in fm.scalers.values() for key, p in group.items() if key in trainable]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=learn.lr)
    loss_fn = _learn_loss(learn)
    losses: list[float] = []
    batches = cycle_batches(learn.data, name="learn.data")
    fm.train()
    bar = tqdm(range(learn.num_steps), desc="learn scalers", disable=not learn.progress, leave=False)
    for step in bar:
        loss = train_step(fm, to_device(next(batches), device), loss_fn, optimizer, device=device, amp=False)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}; lower learn.lr (now {learn.lr})")
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses


# ---------------------------------------------------------------------------------- initialize
def _trainable_scalers(depth: str, width: str) -> set[str]:
    """Scalers a learned run trains: those whose rule is "learn" (Kronecker S for either), or all."""
    trainable = set()
    if depth == "learn":
        trainable |= {"X", "S"}
    if width == "learn":
        trainable |= {"U", "V", "S"}
    return trainable or {"X", "U", "V", "S"}


@torch.no_grad()
def _write(state: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> None:
    for name, value in values.items():
        state[name].copy_(value.detach().to(device=state[name].device, dtype=state[name].dtype))


def initialize(
    target_model: nn.Module,
    template: WeightTemplate | FactorizedModel | str | os.PathLike,
    depth: str = "interpolate",
    width: str = "slice",
    learn: LearnConfig | Mapping[str, Any] | None = None,
    *,
    return_report: bool = False,
    adapter: BackboneAdapter | str | None = None,
    seed: int = 0,
) -> nn.Module | tuple[nn.Module, InitReport]:
    """Initialize ``target_model`` (any depth and width) from a weight template, in place.

    Args:
        target_model: a freshly built model of the template's family (e.g. a timm ViT of another
            depth / width); its parameters are overwritten in place.
        template: a :class:`~tucker_init.WeightTemplate`, a :class:`~tucker_init.FactorizedModel`
            or the path of a template file.
        depth: ``"select"`` | ``"interpolate"`` | ``"learn"``: how the depth scaler ``X (L*S, r1)``
            becomes ``X' (L'*S, r1)``; block-level remainder tensors follow the same map.
        width: ``"slice"`` | ``"interpolate"`` | ``"learn"``: how ``U, V (d, r)`` become
            ``(d', r)``; remainder channel axes follow the same map. Kronecker: ``slice`` / ``learn``.
        learn: a :class:`LearnConfig` (or dict of its fields) to train new scalers before writing
            the weights. Trained are the scalers whose rule is ``"learn"`` (X for depth, U and V
            for width; Kronecker S for either), or all of them when neither rule is ``"learn"``.
        return_report: also return an :class:`InitReport`.
        adapter: the target's backbone adapter (required for templates of the generic family).
        seed: seeds the random rows of a width larger than the template's.

    Returns:
        ``target_model`` (and the report when ``return_report``).

    Raises:
        ValueError: bad option values; a target of another family; a width the rule cannot reach
            (e.g. not a multiple of a Kronecker template's size); heads that would be split; blocks
            with other proportions (mlp ratio); a block structure that cannot be matched.

    Example::

        fm = factorize(vit_small, ranks=(64, 256, 256))
        tiny = timm.create_model("vit_tiny_patch16_224", num_classes=10)
        initialize(tiny, fm, depth="interpolate", width="slice")
    """
    if not isinstance(target_model, nn.Module):
        raise TypeError(f"target_model must be a torch.nn.Module, found {type(target_model).__name__}")
    check_choice("depth", depth, DEPTH_RULES)
    check_choice("width", width, WIDTH_RULES)
    learn = LearnConfig.coerce(learn)
    if learn is None and "learn" in (depth, width):
        raise ValueError(
            f"depth={depth!r}, width={width!r}: the 'learn' rule needs "
            "learn=LearnConfig(data=..., steps=... or epochs=...); found learn=None"
        )
    seed = check_int("seed", seed)
    check_materialized(target_model, "target_model")
    wt = as_template(template)
    found = _resolve_adapter(target_model, wt, adapter)
    if wt.family == "vit":
        _check_vit(wt, target_model, found)
    target_layout = build_layout(target_model, found)
    matches, unit = _plan(wt, wt.layout, target_layout, depth, width)

    state = _target_state(target_model)
    # Scalers and template in the target's dtype (at least float32), so a learned run can call the backbone.
    dtype = master_dtype(state.values())
    generator = torch.Generator().manual_seed(seed)
    scalers = [
        {
            k: v.to(dtype)
            for k, v in _new_scalers(
                wt, m, wt.layout.groups[m.source], target_layout.groups[m.target], generator
            ).items()
        }
        for m in matches
    ]
    config = TemplateConfig(
        wt.config.method,
        tuple(wt.config.ranks[m.source] for m in matches),
        wt.config.share,
        wt.config.kron_sharing,
    )
    template_t = {k: v.to(dtype) for k, v in _target_template(wt, config, target_layout, matches).items()}

    report = InitReport(method=f"{wt.config.method} template (depth={depth}, width={width})")
    remainder = _map_remainder(wt, target_model, target_layout, matches, report, found, unit)
    # Everything is computed before the target is touched: a failure leaves it as it was.
    if learn is None:
        with torch.no_grad():
            weights: dict[str, Tensor] = {}
            for m, s in zip(matches, scalers, strict=True):
                tensor = reconstruct_group(config, target_layout, m.target, template_t, s)
                weights.update(target_layout.groups[m.target].unstack(tensor))
    else:
        trainable = _trainable_scalers(depth, width)
        working = copy.deepcopy(target_model)
        _write(_target_state(working), remainder)
        fm = FactorizedModel(working, target_layout, config, template_t, scalers, found)
        device = learn.device if learn.device is not None else next(iter(state.values())).device
        report.losses = _learn(fm, learn, trainable, torch.device(device))
        report.notes.append(f"learned {sorted(trainable & set(scalers[0]))} for {learn.num_steps} steps, lr {learn.lr}")
        with torch.no_grad():
            weights = fm.reconstruct()

    _write(state, remainder | weights)
    for name in target_layout.templated_names():
        report.set(name, "template", state[name].shape)
    report.entries = {k: report.entries[k] for k in state if k in report.entries}  # state-dict order
    return (target_model, report) if return_report else target_model
