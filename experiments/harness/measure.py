"""Measurements the experiments share: a linear probe of frozen features, the weight scale an
init hands over, parameter counts, and the noise margin of a comparison."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tucker_init import ImageDataset

from .data import fixed_test_loader

__all__ = ["block_norm_ratio", "count_params", "linear_probe", "noise_margin", "pooled_features", "verdict"]


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def pooled_features(model: nn.Module, data: ImageDataset, img_size: int) -> Tensor:
    """Mean of the patch tokens after the final norm (the usual MAE linear-probe feature), float64."""
    model.eval()
    loader = fixed_test_loader(data, img_size)
    feats = [model.forward_features(x)[:, model.num_prefix_tokens :].mean(1) for x, _ in loader]
    return torch.cat(feats).double()


def linear_probe(model: nn.Module, train_set: ImageDataset, test_set: ImageDataset, img_size: int) -> float:
    """Top-1 (percent) of a multinomial logistic regression on standardized frozen features of the
    initialized encoder: full-batch L-BFGS with the L2 penalty of scikit-learn's default (C = 1), in
    torch because scikit-learn's solver took ~20 s per probe on the shared CPU."""
    x_train, x_test = pooled_features(model, train_set, img_size), pooled_features(model, test_set, img_size)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = train_set.labels, test_set.labels
    classes = int(max(y_train.max(), y_test.max())) + 1
    weight = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 0.5 * weight.pow(2).sum() / len(x_train)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * float(((x_test @ weight + bias).argmax(1) == y_test).double().mean())


def block_norm_ratio(model: nn.Module, reference: nn.Module) -> float:
    """Frobenius norm of the block matrices (qkv, proj, fc1, fc2: the templated weights) of ``model``
    over those of ``reference`` (the same architecture at timm's init). A low-rank template reconstructs
    smaller weights than timm's init, which slows early fine-tuning."""
    ref = dict(reference.named_parameters())

    def total(params: dict[str, Tensor]) -> float:
        return sum(
            float(v.detach().double().pow(2).sum())
            for k, v in params.items()
            if k.startswith("blocks.") and v.ndim == 2
        )

    return math.sqrt(total(dict(model.named_parameters())) / total(ref))


def noise_margin(a: dict[str, Any], b: dict[str, Any], n_test: int, key: str = "top1") -> float:
    """One standard error of the difference of two mean accuracies ``{key}_mean`` (points): from the
    spread over seeds when there are several, never below the binomial error of two accuracies on
    ``n_test`` test images (the only noise estimate a single seed has)."""
    p = min(max((a[f"{key}_mean"] + b[f"{key}_mean"]) / 200.0, 0.01), 0.99)
    binomial = 100.0 * math.sqrt(2 * p * (1 - p) / n_test)
    seeds = math.sqrt(a[f"{key}_std"] ** 2 / a["n"] + b[f"{key}_std"] ** 2 / b["n"])
    return max(binomial, seeds)


def verdict(delta: float, margin: float) -> str:
    """``"no clear difference"`` within ``margin``, else ``"better"`` or ``"worse"``."""
    if abs(delta) <= margin:
        return "no clear difference"
    return "better" if delta > 0 else "worse"
