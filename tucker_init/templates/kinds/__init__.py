"""Template kinds, registered by name as tltorch registers its factorized tensors: a kind owns
everything that depends on how a group's unified tensor ``T (S*L, d, d)`` is factorized into a
shared template and per-group scalers (rank checks, template keys, decomposition and random
initialization, reconstruction, the tensors of its file format, resizing its scalers to another
depth and width, whether width-wise scaling applies). The rest of the library asks the kind of a
:class:`~tucker_init.templates.factorized.TemplateConfig` (``get_kind(config.method)``) and never branches
on the name.

A new kind is one class and :func:`register_kind`::

    @register_kind
    class CPKind(TemplateKind):
        name = "cp"
        ...
"""

from __future__ import annotations

from .base import TemplateKind, get_kind, list_kinds, register_kind
from .kronecker import KroneckerKind
from .tucker import TuckerKind

__all__ = ["KroneckerKind", "TemplateKind", "TuckerKind", "get_kind", "list_kinds", "register_kind"]

register_kind(TuckerKind)  # in this order: "tucker" is the default and comes first in listings
register_kind(KroneckerKind)
