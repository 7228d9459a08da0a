"""Moved to :mod:`tucker_init.resize.axis_maps`."""

# kept until experiments/ imports from tucker_init directly; remove then
from .resize.axis_maps import *  # noqa: F403
from .resize.axis_maps import __all__  # noqa: F401
