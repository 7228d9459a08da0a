"""Moved to :mod:`tucker_init.resize` (initialize, learn, plan, report)."""

# kept until experiments/ imports from tucker_init directly; remove then
from .resize.axis_maps import DEPTH_RULES, WIDTH_RULES, AxisMap, depth_map, width_map  # noqa: F401
from .resize.initialize import initialize  # noqa: F401
from .resize.learn import LearnConfig  # noqa: F401
from .resize.plan import GroupMatch, match_groups  # noqa: F401
from .resize.report import SOURCES, InitReport  # noqa: F401
from .template import as_template  # noqa: F401
