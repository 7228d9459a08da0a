"""Training checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` dictionary holding whatever the trainer passes (model,
optimizer and scheduler states, step, RNG states, loader position, config) plus two keys
added here: ``format`` (always :data:`FORMAT`) and ``format_version``. Everything stored is a
tensor or a plain Python container / scalar, so :func:`load_checkpoint` can use
``torch.load(weights_only=True)``; RNG states are converted to tensors and lists for that
reason (:func:`capture_rng_state`).

Writes are atomic (:func:`tucker_init.files.atomic_write`): a crash mid-write leaves the
previous checkpoint intact, never a truncated one.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LAST",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "tucker_init.checkpoint"  # a file format name, not the module path: never change it
FORMAT_VERSION = 1
LAST = "last.pt"  # file name of the latest checkpoint inside a run's out_dir
_RESERVED = ("format", "format_version")


def save_checkpoint(path: str | os.PathLike, **state: Any) -> Path:
    """Write ``state`` (plus ``format`` and ``format_version``) to ``path`` atomically.

    Values should be tensors, numbers, strings, ``None`` or lists / tuples / dicts of these
    (state dicts of modules and optimizers qualify) so that :func:`load_checkpoint` can read
    them with ``weights_only=True``.

    Returns:
        The path written.
    """
    for key in _RESERVED:
        if key in state:
            raise ValueError(f"{key!r} is reserved for the checkpoint header; rename that entry")
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable torch file (random bytes, truncated), holds
            objects that need unpickling, is not a tucker_init checkpoint, or was written by
            a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip errors, unpickling errors, EOF: all mean "not a usable file"
        raise ValueError(
            f"{str(path)!r} is not a readable tucker_init checkpoint (corrupt, truncated or not a "
            f"torch file): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{str(path)!r} is not a tucker_init checkpoint: expected format {FORMAT!r}, found {found!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{str(path)!r}: format_version must be an int, found {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {version}, newer than the version "
            f"{FORMAT_VERSION} this tucker_init reads; upgrade tucker_init to load it"
        )
    return data


# -- random number generator states ------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The states of torch (CPU and every CUDA device), numpy and Python ``random``, as
    tensors and lists so that ``torch.load(weights_only=True)`` reads them back."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "state": list(py_state), "gauss_next": py_gauss},
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng_state`.

    CUDA states are restored only when the number of visible GPUs matches (a warning says so
    otherwise: the run continues, but not bit-exactly).
    """
    try:
        torch.set_rng_state(state["torch"].cpu())
        cuda = state.get("cuda", [])
        if cuda and torch.cuda.is_available():
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
            else:
                warnings.warn(
                    f"checkpoint holds CUDA RNG states for {len(cuda)} GPU(s), this process sees "
                    f"{torch.cuda.device_count()}: CUDA RNG not restored",
                    stacklevel=2,
                )
        n = state["numpy"]
        keys = n["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"malformed RNG state in checkpoint: {type(err).__name__}: {err}") from err
