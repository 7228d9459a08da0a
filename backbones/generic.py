"""An adapter you configure for your own ``nn.Module``.

Example::

    adapter = GenericAdapter(block_containers=["encoder.layers"])
    fm = factorize(my_model, ranks=(8, 32, 32), adapter=adapter)

``block_containers`` names the ``nn.Sequential`` / ``nn.ModuleList`` attributes that hold
the blocks. By default every ``nn.Linear`` weight and every dense ``nn.Conv2d`` weight inside
a block is templated; pass ``is_primary(module, param_name) -> bool`` to choose others
(the weight must still have two channel axes in front: ``(out, in)`` or ``(out, in, kh, kw)``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

from torch import nn

from .base import BackboneAdapter, BlockSequence, default_is_primary, sequence_of


class GenericAdapter(BackboneAdapter):
    """Adapter configured by the paths of the block containers."""

    family = "generic"
    description = "any nn.Module, configured with GenericAdapter(block_containers=[...])"

    def __init__(
        self,
        block_containers: Sequence[str],
        is_primary: Callable[[nn.Module, str], bool] | None = None,
        width_multiple: int = 1,
    ) -> None:
        if isinstance(block_containers, str) or not isinstance(block_containers, Sequence):
            raise TypeError(
                "block_containers must be a list of module paths such as ['blocks'], "
                f"found {type(block_containers).__name__}"
            )
        if len(block_containers) == 0:
            raise ValueError("block_containers must name at least one block container, found []")
        try:
            multiple = None if isinstance(width_multiple, bool) else operator.index(width_multiple)
        except TypeError:
            multiple = None
        if multiple is None or multiple < 1:
            raise ValueError(f"width_multiple must be a positive int, found {width_multiple!r}")
        self.block_containers = list(block_containers)
        self._is_primary = is_primary or default_is_primary
        self._width_multiple = multiple

    def matches(self, model: nn.Module) -> bool:
        names = dict(model.named_modules())
        return all(path in names for path in self.block_containers)

    def block_sequences(self, model: nn.Module) -> list[BlockSequence]:
        names = dict(model.named_modules())
        missing = [p for p in self.block_containers if p not in names]
        if missing:
            raise ValueError(
                f"block container(s) {missing} not found in {type(model).__name__}; "
                "module paths there include "
                f"{[n for n, m in names.items() if isinstance(m, (nn.Sequential, nn.ModuleList))][:10]}"
            )
        return [sequence_of(model, path) for path in self.block_containers]

    def is_primary(self, module: nn.Module, param_name: str) -> bool:
        return self._is_primary(module, param_name)

    def width_multiple(self, model: nn.Module) -> int:
        return self._width_multiple
