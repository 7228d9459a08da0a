"""Per-run JSON results, so an interrupted long run resumes where it stopped. (Pre-trained sources
have their own, shared cache: :func:`experiments.harness.sources.ensure_source`.)"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cached_run", "settings_of"]


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so stored and new settings compare."""
    return json.loads(json.dumps(value))


def settings_of(obj: Any, drop: tuple[str, ...] = ("seeds",)) -> dict[str, Any]:
    """A dataclass's fields as JSON-ready settings, less ``drop`` (by default the seeds: a run of
    one seed stays valid when others are added)."""
    return _jsonable({k: v for k, v in dataclasses.asdict(obj).items() if k not in drop})


def cached_run(path: Path, settings: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s JSON result, stored at ``path`` with ``settings``; reused (with ``"reused": True``)
    while ``settings`` are unchanged, computed again when they differ."""
    settings = _jsonable(settings)
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings:
            return {**stored["result"], "reused": True}
    result = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
    os.replace(tmp, path)  # atomic: a half-written file never counts as done
    return result
