"""Tiny training setup shared by test_train.py / test_distributed.py, and a subprocess entry
point for the resume test (a fresh process) and the DDP test (launched by torchrun).

    python tests/_train_worker.py --out-dir D --steps 8 [--max-steps 4] [--resume] --params P.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tucker_init.templates.factorized import factorize
from tucker_init.training import TrainConfig, classification_loss, train
from tucker_init.training.data import BatchLoader, ImageDataset
from tucker_init.training.distributed import cleanup, init_distributed


def tiny_dataset(n: int = 64, seed: int = 0) -> ImageDataset:
    """Fixed random 8x8 grey images whose label is learnable (brightest quadrant + parity)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    quadrant = images.float().reshape(n, 2, 4, 2, 4).mean((2, 4)).flatten(1).argmax(1)
    labels = (quadrant * 2 + (images[:, 0, 0, 0] % 2).long()).to(torch.int64)
    return ImageDataset("tiny", images, labels, [str(i) for i in range(10)])


def tiny_vit(dropout: float = 0.0, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=10,
        proj_drop_rate=dropout,
    )


def tiny_model(factorized: bool, dropout: float = 0.0) -> torch.nn.Module:
    vit = tiny_vit(dropout)
    return factorize(vit, ranks=(4, 16, 16)) if factorized else vit


def tiny_loader(batch_size: int, rank: int = 0, world_size: int = 1, augment: bool = True) -> BatchLoader:
    return BatchLoader(
        tiny_dataset(),
        batch_size,
        image_size=16,
        augment=augment,
        seed=3,
        rank=rank,
        world_size=world_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--factorized", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--params", required=True, help="where to save the final state_dict ({rank} is filled in)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    info = init_distributed("cpu")
    model = tiny_model(args.factorized, args.dropout)
    loader = tiny_loader(args.batch_size // info.world_size, info.rank, info.world_size)
    config = TrainConfig(
        steps=args.steps,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=1e-5,
        warmup_steps=2,
        weight_decay=0.05,
        grad_clip=1.0,
        label_smoothing=0.1,
        seed=1,
        device="cpu",
        log_every=2,
        checkpoint_every=args.checkpoint_every,
        out_dir=args.out_dir,
    )
    result = train(model, loader, classification_loss(config.label_smoothing), config, resume=args.resume)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, args.params.format(rank=info.rank))
    if info.is_main:
        print(f"step={result.step} stopped={result.stopped} loss={result.loss}")
    cleanup()


if __name__ == "__main__":
    main()
