"""What an initializer says about its work: :class:`InitReport`, where each tensor of the target's
state came from, over the tensors :func:`init_state` lists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["SOURCES", "InitReport", "init_state"]

SOURCES = ("template", "copied", "selected", "interpolated", "new-block", "target-init")
"""What :class:`InitReport` says about a target tensor: rebuilt from the ``template``; ``copied``
unchanged from the source's tensor of the same name; ``selected`` from source entries picked by
the depth / width rule (new channels at the target's init); ``interpolated`` from a linear mix
of source entries; ``new-block`` in a block that depth ``identity`` added (zero in its residual
writers, else drawn at the statistics of the block before it); ``target-init`` left at the
target's own initialization."""


def init_state(model: nn.Module) -> dict[str, Tensor]:
    """The tensors an initializer writes and a report covers: parameters and floating-point
    buffers (BN statistics; not integer counters), by state-dict key, in state-dict order."""
    state = dict(model.named_parameters())
    state.update({k: v for k, v in model.named_buffers() if v.is_floating_point()})
    return state


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

    def sort_like(self, names: Iterable[str]) -> None:
        """Order the entries as ``names`` (a state dict's keys), dropping names not reported."""
        self.entries = {k: self.entries[k] for k in names if k in self.entries}

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
