"""The Tucker kind (SWEET): ``T ~= G x1 X x2 U x3 V`` with a core ``G (r1, r2, r3)``, shared by
all groups (``share=True``) or one per group, and per-group scalers ``X (S*L, r1)``,
``U (d, r2)``, ``V (d, r3)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...resize.axis_maps import AxisMap, map_width
from ...validation import full_ranks, rank_tuple
from ..layout import GroupLayout, ModelLayout
from ..tucker import hosvd, shared_core, tucker_reconstruct
from .base import Scalers, Template, TemplateKind, orthonormal, rms_scale

if TYPE_CHECKING:
    from ..template import TemplateConfig

__all__ = ["TuckerKind"]


class TuckerKind(TemplateKind):
    name = "tucker"
    rank_modes = (
        "mode 1 (depth: S*L slices, scaler X)",
        "mode 2 (output width, scaler U)",
        "mode 3 (input width, scaler V)",
    )
    width_scaling = True
    symbol = "G"

    def check_ranks(self, ranks: Any, layout: ModelLayout, share: bool) -> list[tuple[int, int, int]]:
        """``r_m`` may not exceed mode m of a group's ``(S*L, d, d)`` tensor (with a shared core,
        the smallest group's); ``"full"`` takes each group's :func:`~tucker_init.validation.full_ranks`
        (lossless; with a shared core only when there is one group)."""
        groups = layout.groups
        if isinstance(ranks, str) and ranks == "full":
            if share and len(groups) > 1:
                raise ValueError(
                    f"ranks='full' needs one template per group (share=False): the {len(groups)} "
                    f"groups have different mode sizes {[g.shape for g in groups]}"
                )
            return [full_ranks(g.shape) for g in groups]
        wanted = rank_tuple(ranks)
        for mode, r in enumerate(wanted):
            for g in groups:
                if r > g.shape[mode]:
                    limit = min(x.shape[mode] for x in groups) if share else g.shape[mode]
                    raise ValueError(
                        f"ranks[{mode}]={r} exceeds the maximum {limit} for {self.rank_modes[mode]} "
                        f"of group {g.name!r} (unified tensor {g.shape})"
                    )
        return [wanted] * len(groups)

    def template_keys(self, layout: ModelLayout, config: TemplateConfig) -> list[list[str]]:
        return [["shared" if config.share else f"g{i}"] * len(g.slots) for i, g in enumerate(layout.groups)]

    def shapes(self, layout: ModelLayout, config: TemplateConfig) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (group, keys, ranks) in enumerate(
            zip(layout.groups, self.template_keys(layout, config), config.ranks, strict=True)
        ):
            n, d, _ = group.shape
            r1, r2, r3 = ranks
            shapes[f"template.{keys[0]}"] = ranks
            shapes.update({f"scalers.g{i}.X": (n, r1), f"scalers.g{i}.U": (d, r2), f"scalers.g{i}.V": (d, r3)})
        return shapes

    def decompose(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig
    ) -> tuple[Template, Scalers]:
        if config.share:
            core, factors = shared_core(tensors, config.ranks[0])
            template = {"shared": core}
        else:
            decomposed = [hosvd(t, r) for t, r in zip(tensors, config.ranks, strict=True)]
            template = {f"g{i}": core for i, (core, _) in enumerate(decomposed)}
            factors = [f for _, f in decomposed]
        return template, [dict(zip("XUV", f, strict=True)) for f in factors]

    def random(
        self, tensors: Sequence[Tensor], layout: ModelLayout, config: TemplateConfig, generator: torch.Generator
    ) -> tuple[Template, Scalers]:
        # Orthonormal scalers and a Gaussian core whose scale gives each group's weights the
        # same RMS as the backbone's own initialization. With orthonormal factors ||T|| = ||G||:
        # a shared core has the first group's scale, so every other group's X carries the ratio
        # of its own (a ResNet stage twice as wide would otherwise start at half timm's RMS),
        # and each row of X (one slice) the ratio of its slice's RMS to the group's (a 1x1
        # down-sampling kernel is initialized larger than the 3x3 kernels beside it).
        template: Template = {}
        scalers: Scalers = []
        core_scale: dict[str, Tensor] = {}
        for i, (t, ranks) in enumerate(zip(tensors, config.ranks, strict=True)):
            shapes = zip("XUV", t.shape, ranks, strict=True)
            factors = {m: orthonormal(size, r, generator, t.dtype) for m, size, r in shapes}
            key = "shared" if config.share else f"g{i}"
            scale = rms_scale(t, ranks)
            if key not in template:
                template[key] = torch.randn(ranks, generator=generator, dtype=t.dtype) * scale
                core_scale[key] = scale
            slice_rms = t.pow(2).mean(dim=(1, 2)).sqrt() / t.pow(2).mean().sqrt()  # (S*L,)
            factors["X"] = factors["X"] * slice_rms[:, None] * (scale / core_scale[key])
            scalers.append(factors)
        return template, scalers

    def reconstruct(
        self,
        config: TemplateConfig,
        layout: ModelLayout,
        index: int,
        template: Mapping[str, Tensor],
        scalers: Mapping[str, Tensor],
    ) -> Tensor:
        key = "shared" if config.share else f"g{index}"
        return tucker_reconstruct(template[key], scalers["X"], scalers["U"], scalers["V"])

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
        """X: the depth map over its layers; U, V: the width map, new rows random per column (V's,
        the input side, zero under ``zero_fanout``)."""
        S = source.slices_per_block
        X = depth.apply(scalers["X"].reshape(source.depth, S, -1), 0).reshape(target.depth * S, -1)
        U = map_width(scalers["U"], 0, width, generator, per_column=True)
        V = map_width(scalers["V"], 0, width, generator, per_column=True, reads=True)
        return {"X": X.contiguous(), "U": U.contiguous(), "V": V.contiguous()}
