"""Settings shared by several scripts.

The three ablations (``stochastic_scaling``, ``rank_sweep``, ``mae_vs_supervised``)
share: one source ViT at 16 px, a light MAE decoder, and one budget per mode, so that their
sources and runs are the same where the scripts ask the same question (and share cache entries).
Each script subclasses :class:`AblationSetting` with the fields of its own question.

``init_methods`` and ``convergence`` subclass :class:`FinetunePlan`, the budget of learning a
target's scalers and fine-tuning it (their sources come from ``sources.SOURCE_PRESETS``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from tucker_init import LearnConfig
from tucker_init.pipeline import ModelSpec
from tucker_init.training import TrainResult

from .cli import Context, override
from .data import Splits
from .runs import finetune_classifier, learn_config
from .sources import SOURCE_PRESETS, SourcePreset, SourceSpec

__all__ = ["BUDGETS", "PLAN_BUDGETS", "AblationSetting", "FinetunePlan", "resolve_plan"]


@dataclass(frozen=True, kw_only=True)
class AblationSetting:
    """Everything that decides the numbers of an ablation run (a script adds its own fields)."""

    name: str  # the mode
    data: str = "fashion_mnist"
    img_size: int = 16
    patch_size: int = 4
    depth: int = 4  # of the source ViT the templates are made on
    width: int = 128
    scaling: str = "off"  # pipeline.pretrain's default: prefix and rank lost 4-5 points in stochastic_scaling
    pretrain_steps: int
    pretrain_subset: int | None
    finetune_steps: int
    train_subset: int | None
    test_subset: int | None
    probe_train: int  # linear-probe training images
    eval_points: int  # evaluations during fine-tuning (the curves)
    batch_size: int = 64
    pretrain_lr: float = 1.5e-3
    finetune_lr: float = 1e-3
    decoder: tuple[int, int, int] = (64, 1, 2)  # MAE decoder (dim, depth, heads): light, the encoder is what we keep
    seeds: tuple[int, ...]

    @property
    def source(self) -> ModelSpec:
        """The ViT the dense source and the templates are made on."""
        return ModelSpec("vit", self.depth, self.width, 10, self.img_size, self.patch_size)

    def source_spec(
        self,
        kind: str,
        seed: int,
        *,
        ranks: tuple[int, int, int] | None = None,
        scaling: str = "off",
        objective: str = "mae",
    ) -> SourceSpec:
        """A source on :attr:`source` with this setting's budget and light decoder (none for the
        labelled objective) and ``seed``."""
        return SourceSpec(
            kind,
            self.source,
            **self.budget(),
            seed=seed,
            ranks=ranks,
            scaling=scaling,
            objective=objective,
            decoder=self.decoder if objective == "mae" else None,
        )

    def budget(self) -> dict[str, Any]:
        """The pre-training budget, as :class:`SourceSpec` fields."""
        return {
            "steps": self.pretrain_steps,
            "batch_size": self.batch_size,
            "lr": self.pretrain_lr,
            "data": self.data,
            "train_subset": self.pretrain_subset,
        }

    def finetune(self, model: nn.Module, splits: Splits, seed: int, device: str, *, curve: bool = False) -> TrainResult:
        """Fine-tune ``model`` with this setting's budget (with ``curve``, :attr:`eval_points`
        evaluations on the way)."""
        steps = self.finetune_steps
        return finetune_classifier(
            model,
            splits,
            steps=steps,
            batch_size=self.batch_size,
            lr=self.finetune_lr,
            seed=seed,
            device=device,
            image_size=self.img_size,
            eval_every=max(1, steps // self.eval_points) if curve else 0,
        )


_SMOKE = {"data": "digits", "batch_size": 16, "decoder": (32, 1, 2), "depth": 1, "probe_train": 64, "eval_points": 1}
BUDGETS: dict[str, dict[str, Any]] = {
    # Seconds: only checks that the plumbing works and the files appear.
    "smoke": {
        "name": "smoke",
        **_SMOKE,
        "pretrain_steps": 2,
        "pretrain_subset": 128,
        "finetune_steps": 2,
        "train_subset": 128,
        "test_subset": 64,
        "seeds": (0,),
    },
    # Minutes on 2 CPU cores: one seed, short budgets; differences of a point or two are noise.
    "quick": {
        "name": "quick",
        "pretrain_steps": 400,
        "pretrain_subset": 20000,
        "finetune_steps": 150,
        "train_subset": 10000,
        "test_subset": 1000,
        "probe_train": 1500,
        "eval_points": 4,
        "seeds": (0,),
    },
    # Hours on 2 CPU cores (minutes on a GPU): 3 seeds, all the data.
    "full": {
        "name": "full",
        "pretrain_steps": 3000,
        "pretrain_subset": None,
        "finetune_steps": 600,
        "train_subset": None,
        "test_subset": None,
        "probe_train": 5000,
        "eval_points": 6,
        "seeds": (0, 1, 2),
    },
}


@dataclass(frozen=True, kw_only=True)
class FinetunePlan:
    """How targets are made and fine-tuned in one mode of ``init_methods`` / ``convergence``."""

    learn_steps: int  # scaler learning (``kronecker``, ``tucker_learned``) before fine-tuning
    learn_batch: int
    finetune_steps: int
    finetune_batch: int
    finetune_lr: float = 1e-3
    test_subset: int | None
    train_subset: int | None = None  # fine-tuning data subset (smoke only)
    seeds: tuple[int, ...] = (0,)
    layer_decay: float | None = None  # of the fine-tuning (timm's layer-wise lr decay); None: one lr for all

    def learn(self, splits: Splits, seed: int, device: str) -> LearnConfig:
        """Scaler learning on the labelled training images."""
        return learn_config(splits.train, self.learn_batch, self.learn_steps, seed, device)

    def finetune(self, model: nn.Module, splits: Splits, seed: int, device: str, *, eval_every: int = 0) -> TrainResult:
        """Fine-tune ``model`` with this plan's budget (at 32 px)."""
        return finetune_classifier(
            model,
            splits,
            steps=self.finetune_steps,
            batch_size=self.finetune_batch,
            lr=self.finetune_lr,
            seed=seed,
            device=device,
            eval_every=eval_every,
            layer_decay=self.layer_decay,
        )


_MINUTES = {"learn_steps": 50, "learn_batch": 32, "finetune_batch": 32, "test_subset": 2000}
PLAN_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"learn_steps": 2, "learn_batch": 16, "finetune_batch": 16, "test_subset": 64, "train_subset": 256},
    "quick": _MINUTES,
    "medium": {**_MINUTES, "seeds": (0, 1, 2)},
    # ~0.16 epoch of Fashion-MNIST for the scalers (150 x 64 = 9,600 images), as in SWEET.
    "full": {"learn_steps": 150, "learn_batch": 64, "finetune_batch": 64, "test_subset": None, "seeds": (0, 1, 2)},
}


P = TypeVar("P", bound=FinetunePlan)


def resolve_plan(plans: dict[str, P], context: Context, **values: Any) -> tuple[SourcePreset, P]:
    """The mode's source preset and plan with the common overrides that were given (``--data``,
    ``--pretrain-steps``, ``--scaling``; ``--learn-steps``, ``--finetune-steps``, ``--seeds``) and
    ``values``."""
    args = context.args
    preset = override(SOURCE_PRESETS[context.mode], data=args.data, steps=args.pretrain_steps, scaling=args.scaling)
    common = {"learn_steps": args.learn_steps, "finetune_steps": args.finetune_steps, "seeds": context.seeds}
    return preset, override(plans[context.mode], **common, **values)
