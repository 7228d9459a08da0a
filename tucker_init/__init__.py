"""tucker_init: weight templates for initializing vision models of any depth and width."""

from .factorized import FactorizedModel, TemplateConfig, factorize
from .layout import GroupLayout, ModelLayout, ParamSlot, build_layout

__version__ = "0.1.0"

__all__ = [
    "FactorizedModel",
    "GroupLayout",
    "ModelLayout",
    "ParamSlot",
    "TemplateConfig",
    "__version__",
    "build_layout",
    "factorize",
]
