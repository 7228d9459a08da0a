"""tucker_init: weight templates for initializing vision models of any depth and width."""

from .factorized import FactorizedModel, TemplateConfig, factorize, reconstruct_group
from .io import WeightTemplate, load_template, save_template, to_factorized
from .layout import GroupLayout, ModelLayout, ParamSlot, build_layout

__version__ = "0.1.0"

__all__ = [
    "FactorizedModel",
    "GroupLayout",
    "ModelLayout",
    "ParamSlot",
    "TemplateConfig",
    "WeightTemplate",
    "__version__",
    "build_layout",
    "factorize",
    "load_template",
    "reconstruct_group",
    "save_template",
    "to_factorized",
]
