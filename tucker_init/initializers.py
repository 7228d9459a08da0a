"""Moved to :mod:`tucker_init.resize.initializers`."""

# kept until experiments/ imports from tucker_init directly; remove then
from .resize.initializers import *  # noqa: F403
from .resize.initializers import __all__  # noqa: F401
