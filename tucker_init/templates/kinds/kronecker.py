"""The Kronecker kind (WAVE / WeiT): each ``d x d`` slice is ``sum_i kron(S_i, T_i)`` with ``k``
shared templates ``T_i (a, b)`` (``kron_sharing="all"``, WeiT-like, or one set per weight
"component", WAVE) and per-slice coefficients ``S (S*L, k, d/a, d/b)``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...resize.axis_maps import AxisMap, map_width, width_map
from ...validation import rank_tuple
from ..kronecker import kronecker_reconstruct, kronecker_svd
from ..layout import GroupLayout, ModelLayout
from .base import Scalers, Template, TemplateKind, orthonormal

if TYPE_CHECKING:
    from ..template import TemplateConfig

__all__ = ["KroneckerKind"]


class KroneckerKind(TemplateKind):
    name = "kronecker"
    rank_modes = ("number of templates k", "template rows a", "template columns b")

    def check_ranks(self, ranks: Any, layout: ModelLayout, share: bool) -> list[tuple[int, int, int]]:
        """``(k, a, b)`` with ``a`` and ``b`` dividing every group's width and ``k <= a*b``."""
        if isinstance(ranks, str) and ranks == "full":
            raise ValueError(
                "ranks='full' is only defined for method='tucker'; for Kronecker pass (k, a, b), lossless at k = a*b"
            )
        k, a, b = rank_tuple(ranks)
        for axis, size in (("a", a), ("b", b)):
            for g in layout.groups:
                if g.width % size:
                    common = math.gcd(*(g.width for g in layout.groups))
                    divisors = [x for x in range(1, common + 1) if common % x == 0]
                    raise ValueError(
                        f"ranks: template size {axis}={size} does not divide the width "
                        f"d={g.width} of group {g.name!r}; sizes that divide every group: {divisors}"
                    )
        if k > a * b:
            raise ValueError(f"ranks[0]: {self.rank_modes[0]} allows at most a*b = {a * b}, found {k}")
        return [(k, a, b)] * len(layout.groups)

    def template_keys(self, layout: ModelLayout, config: TemplateConfig) -> list[list[str]]:
        if config.kron_sharing == "all":
            return [["all"] * len(g.slots) for g in layout.groups]
        return [[slot.name.replace(".", "_") for slot in g.slots] for g in layout.groups]

    def shapes(self, layout: ModelLayout, config: TemplateConfig) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (group, keys, ranks) in enumerate(
            zip(layout.groups, self.template_keys(layout, config), config.ranks, strict=True)
        ):
            n, d, _ = group.shape
            k, a, b = ranks
            shapes.update({f"template.{key}": ranks for key in keys})
            shapes[f"scalers.g{i}.S"] = (n, k, d // a, d // b)
        return shapes

    def _pieces(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig
    ) -> dict[str, list[tuple[int, Tensor]]]:
        """The slices of each (group, slot), gathered per template key."""
        keys = self.template_keys(layout, config)
        pieces: dict[str, list[tuple[int, Tensor]]] = {}
        for i, (group, t) in enumerate(zip(layout.groups, tensors, strict=True)):
            per_layer = t.reshape(group.depth, group.slices_per_block, group.width, group.width)
            for key, slot in zip(keys[i], group.slots, strict=True):
                chunk = per_layer[:, slot.offset : slot.offset + slot.count(group.width)]
                pieces.setdefault(key, []).append((i, chunk.reshape(-1, group.width, group.width)))
        return pieces

    def _assemble(
        self, layout: ModelLayout, config: TemplateConfig, chunks: dict[tuple[int, str], list[Tensor]]
    ) -> Scalers:
        """Per group, the coefficients of its slots in slice order: ``(L, S, ...)`` block-major."""
        keys = self.template_keys(layout, config)
        scalers = []
        for i, group in enumerate(layout.groups):
            cursor: dict[str, int] = {}
            per_slot = []
            for key, slot in zip(keys[i], group.slots, strict=True):
                j = cursor.get(key, 0)
                cursor[key] = j + 1
                c = chunks[(i, key)][j]
                per_slot.append(c.reshape(group.depth, slot.count(group.width), *c.shape[1:]))
            scalers.append({"S": torch.cat(per_slot, dim=1).flatten(0, 1).contiguous()})
        return scalers

    def _build(
        self,
        tensors: Sequence[Tensor],
        layout: ModelLayout,
        config: TemplateConfig,
        templates_and_coefficients: Callable[[list[Tensor]], tuple[Tensor, list[Tensor]]],
    ) -> tuple[Template, Scalers]:
        """Per template key, ``templates_and_coefficients(slices)`` gives the key's templates
        ``(k, a, b)`` and one coefficient tensor per slice group; assembled into per-group scalers."""
        template: Template = {}
        chunks: dict[tuple[int, str], list[Tensor]] = {}
        for key, items in self._pieces(tensors, layout, config).items():
            template[key], coefficients = templates_and_coefficients([s for _, s in items])
            for (i, _), c in zip(items, coefficients, strict=True):
                chunks.setdefault((i, key), []).append(c)
        return template, self._assemble(layout, config, chunks)

    def decompose(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig
    ) -> tuple[Template, Scalers]:
        """The Van Loan-Pitsianis SVD of each key's slices (lossless at k = a*b)."""
        k, a, b = config.ranks[0]
        return self._build(tensors, layout, config, lambda slices: kronecker_svd(slices, k, a, b))

    def random(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig, generator: torch.Generator
    ) -> tuple[Template, Scalers]:
        k, a, b = config.ranks[0]

        def draw(slices: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
            basis = orthonormal(a * b, k, generator, slices[0].dtype)  # (ab, k)
            coefficients = []
            for s in slices:
                shape = (s.shape[0], k, s.shape[-1] // a, s.shape[-1] // b)
                rms = s.pow(2).mean().sqrt()
                coefficients.append(torch.randn(shape, generator=generator, dtype=s.dtype) * rms * math.sqrt(a * b / k))
            return basis.T.reshape(k, a, b).contiguous(), coefficients

        return self._build(tensors, layout, config, draw)

    def reconstruct(
        self,
        config: TemplateConfig,
        layout: ModelLayout,
        index: int,
        template: Mapping[str, Tensor],
        scalers: Mapping[str, Tensor],
    ) -> Tensor:
        coefficients = scalers["S"]
        if config.kron_sharing == "all":
            return kronecker_reconstruct(coefficients, template["all"])
        group = layout.groups[index]
        keys = self.template_keys(layout, config)[index]
        per_slot = torch.cat(
            [
                template[key].expand(slot.count(group.width), *template[key].shape)
                for key, slot in zip(keys, group.slots, strict=True)
            ]
        )  # (S, k, a, b)
        depth = coefficients.shape[0] // per_slot.shape[0]
        return kronecker_reconstruct(coefficients, per_slot.repeat(depth, 1, 1, 1))

    def check_width(self, ranks: tuple[int, int, int], group: str, d: int, d_new: int, rule: str) -> None:
        _, a, b = ranks
        if d_new % a or d_new % b:
            step = math.lcm(a, b)
            raise ValueError(
                f"width {d_new} of target group {group!r} cannot be reached with Kronecker templates "
                f"of size {a}x{b}: it must be a multiple of {step}, e.g. {[step * k for k in range(1, 9)]}"
            )
        if rule in ("interpolate", "select") and d_new != d:
            raise ValueError(
                f"width={rule!r} is not defined for Kronecker templates (it would mix channels "
                "across template blocks); use width='slice', 'zero_fanout' or 'learn'"
            )

    def unit_width_maps(self) -> bool:
        return False

    def resize_scalers(
        self,
        scalers: Mapping[str, Tensor],
        ranks: tuple[int, int, int],
        depth: AxisMap,
        width: AxisMap,
        source: GroupLayout,
        target: GroupLayout,
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        """The depth map over the layers of S; its two block axes sliced to ``d'/a`` and ``d'/b``
        (new input blocks zero under ``zero_fanout``)."""
        _, a, b = ranks
        L, S = source.depth, source.slices_per_block
        k, p, q = scalers["S"].shape[1:]
        C = depth.apply(scalers["S"].reshape(L, S, k, p, q), 0)
        # slice (learn starts from it) and zero_fanout are the Kronecker width rules, checked by check_width
        rule = "zero_fanout" if width.zero_fanout else "slice"
        C = map_width(C, 3, width_map(p, target.width // a, rule), generator, per_column=False)
        C = map_width(C, 4, width_map(q, target.width // b, rule), generator, per_column=False, reads=True)
        return {"S": C.reshape(target.depth * S, k, target.width // a, target.width // b).contiguous()}
