"""Multi-process training: 2 gloo processes under torchrun against 1 process, same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tucker_init.training import TrainConfig, classification_loss, train
from tucker_init.training.checkpoint import load_checkpoint
from tucker_init.training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    get_info,
    init_distributed,
    is_main,
    resolve_device,
    unwrap,
    wrap_ddp,
)

sys.path.insert(0, str(Path(__file__).parent))
from _models import assert_close_rel
from _train_worker import tiny_loader, tiny_model

WORKER = Path(__file__).parent / "_train_worker.py"
ROOT = Path(__file__).resolve().parents[1]
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


@pytest.fixture
def single_process(monkeypatch):
    for name in _TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_defaults(single_process):
    info = init_distributed("cpu")
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert info.is_main and not info.distributed and is_main() and get_info("cpu") == info
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model and unwrap(model) is model
    x = torch.arange(3.0)
    assert torch.equal(all_reduce_mean(x), x) and all_gather_objects({"a": 1}) == [{"a": 1}]


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            resolve_device("cuda")


def test_bad_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed("cpu")


def test_loader_world_size_must_match_the_job(single_process):
    config = TrainConfig(steps=2, device="cpu")
    with pytest.raises(ValueError, match="world_size=2"):
        train(tiny_model(False), tiny_loader(8, rank=0, world_size=2), classification_loss(), config)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_ddp_two_processes_match_one_process_on_a_factorized_model(tmp_path, single_process, one_thread):
    steps, batch = 6, 16
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    params = tmp_path / "rank{rank}.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on localhost with a free port
        "--nproc_per_node",
        "2",
        str(WORKER),
        *("--steps", str(steps), "--batch-size", str(batch), "--factorized", "--params", str(params)),
        *("--out-dir", str(tmp_path / "run"), "--checkpoint-every", "3"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The same run in this process: one rank, the whole global batch.
    model = tiny_model(factorized=True)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=3e-3,
        min_lr=1e-5,
        warmup_steps=2,
        weight_decay=0.05,
        grad_clip=1.0,
        label_smoothing=0.1,
        seed=1,
        device="cpu",
        log_every=2,
    )
    train(model, tiny_loader(batch), classification_loss(0.1), config)
    expected = model.state_dict()

    for rank in (0, 1):
        got = torch.load(str(params).format(rank=rank), weights_only=True)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            # Two half-batch gradients all-reduced against one whole-batch gradient: another
            # summation order, which AdamW's m / sqrt(v) carries into every update (seen 8e-6).
            assert_close_rel(got[key], value, 1e-4, msg=f"rank {rank}: {key}")
    # DDP saw the template and scalers: they moved, identically on both ranks.
    for key in ("template.shared", "scalers.g0.X", "scalers.g0.U", "scalers.g0.V"):
        assert (expected[key] - initial[key]).abs().max() > 1e-4, key
    # Only rank 0 wrote files (each metrics record once); the checkpoint holds one RNG state per rank.
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == steps
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt", "metrics.jsonl"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3, 4, 6]
