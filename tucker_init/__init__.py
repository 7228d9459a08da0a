"""tucker_init: weight templates for initializing vision models of any depth and width."""

from .models import create_model
from .objectives.mae import MaskedAutoencoder, MaskedConvAutoencoder, MaskedOutput, masked_model_for
from .objectives.stochastic import WidthScaling
from .resize.initialize import initialize
from .resize.initializers import get_initializer, list_initializers, register_initializer
from .resize.learn import LearnConfig
from .resize.plan import ResizePlan, plan_resize
from .resize.report import InitReport
from .resize.target_weights import target_weights
from .templates.factorized import FactorizedModel, factorize
from .templates.io import WeightTemplate, load_template, save_template, to_factorized
from .templates.layout import GroupLayout, ModelLayout, ParamSlot, build_layout
from .templates.template import TemplateConfig, reconstruct_group
from .training.data import BatchLoader, ImageDataset, default_dataset, list_datasets, load_dataset

__version__ = "0.1.0"

__all__ = [
    "BatchLoader",
    "FactorizedModel",
    "GroupLayout",
    "ImageDataset",
    "InitReport",
    "LearnConfig",
    "MaskedAutoencoder",
    "MaskedConvAutoencoder",
    "MaskedOutput",
    "ModelLayout",
    "ParamSlot",
    "ResizePlan",
    "TemplateConfig",
    "WeightTemplate",
    "WidthScaling",
    "__version__",
    "build_layout",
    "create_model",
    "default_dataset",
    "factorize",
    "get_initializer",
    "initialize",
    "list_datasets",
    "list_initializers",
    "load_dataset",
    "load_template",
    "masked_model_for",
    "plan_resize",
    "reconstruct_group",
    "register_initializer",
    "save_template",
    "target_weights",
    "to_factorized",
]
