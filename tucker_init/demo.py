"""The README's demo: pre-train a small ViT template with masked image modeling, and beside it a
dense MAE model of the same size for the same steps; initialize three target sizes from each
(the dense model through its lossless template, the path that measured best in the README's
equal-cost benchmark with its longer sources), fine-tune every start next to a randomly
initialized twin, print the table and write the results (``demo.json``: table rows, accuracy
curves, provenance, the template's path). Every stage is skipped when its output exists, so an
interrupted demo picks up where it stopped; ``demo_settings.json`` refuses a folder whose stages
ran with other settings. The table files and figures are drawn from ``demo.json`` by
``python -m analysis.demo_plots`` (``scripts/demo.sh`` runs both): the core draws nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .pipeline import (
    ModelSpec,
    finetune_model,
    init_model,
    load_model,
    lossless_rules,
    lossless_template,
    pretrain,
    save_model,
)
from .training import TrainResult
from .training.data import default_dataset

__all__ = ["DEMO_METHODS", "DEMO_RESULTS", "DEMO_TARGETS", "run_demo"]

TEMPLATE = ModelSpec("vit", depth=6, width=128)
TEMPLATE_RANKS = (36, 64, 64)
DEMO_TARGETS = ((3, 64), (6, 128), (8, 192))  # smaller, same, deeper and wider than the template
# The starts of every target, as the table's columns name them ("<method>_top1").
DEMO_METHODS = {
    "random": "random init (timm's)",
    "template": "Tucker MAE template (depth interpolate, width slice)",
    "compress": "a dense MAE model held by its lossless template (depth first, width select: weight "
    "selection's model; depth interpolate for a deeper target, width zero_fanout for a wider one)",
}
DEMO_RESULTS = "demo.json"  # in the output folder; what analysis.demo_plots reads
# One seed's top-1 moves by about this much between seeds at these budgets (README: random init's
# std over 3 seeds is 2-8 points); a smaller gap says nothing.
NOISE_POINTS = 3.0


def verdict(delta: float, quick: bool, name: str = "template") -> str:
    """What one seed's gap (``name``'s start - random init's, points) says, in words. Under
    ``--quick`` nothing: its 60 fine-tuning steps moved gaps by 5 points either way here."""
    if quick:
        return f"{name}: --quick is too short to tell"
    if abs(delta) < NOISE_POINTS:
        return f"{name} within one seed's noise"
    return f"{name} ahead" if delta > 0 else f"random init ahead of {name}"


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``out/demo_settings.json``, or refuse an output folder whose finished
    stages were run with other ones (they would be reused as they are, under a wrong provenance).

    Raises:
        ValueError: ``out`` holds a demo run with other settings (named, with both values).
    """
    path = out / "demo_settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            said = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"{out} holds a demo run with other settings ({said}): pass another --out or remove it")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _pretrain_once(out: Path, dense: bool, steps: int, seed: int, device: str, data: str) -> Path:
    """The template (or with ``dense`` the dense model) pre-trained with MAE into ``out``, unless it is there."""
    path = out / ("dense.safetensors" if dense else "template.safetensors")
    if not path.is_file():
        pretrain(
            TEMPLATE,
            data,
            out,
            **({"dense": True} if dense else {"ranks": TEMPLATE_RANKS}),
            steps=steps,
            batch_size=128,
            seed=seed,
            device=device,
            resume=(out / "last.pt").is_file(),
        )
    return path


def _init_once(spec: ModelSpec, method: str, sources: dict[str, Path], out: Path, seed: int) -> Path:
    """``spec`` initialized by ``method`` (template or compress) into ``out/init.safetensors``, with
    its per-tensor report, unless it is there."""
    path = out / "init.safetensors"
    if path.is_file():
        return path
    if method == "template":
        model, report = init_model(spec, sources["template"], depth="interpolate", width="slice", seed=seed)
    else:
        held = lossless_template(sources["compress"])  # exact: the template holds the dense model
        model, report = init_model(spec, held, **lossless_rules(TEMPLATE, spec), seed=seed)
    save_model(path, model, spec)
    (out / "init_report.txt").write_text(str(report))
    return path


def _finetune_once(
    model, data, out: Path, steps: int, seed: int, device: str, batch_size: int, test_subset: int
) -> dict[str, Any]:
    """Fine-tune unless ``out/result.json`` exists; returns the stored result."""
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    result: TrainResult = finetune_model(
        model,
        data,
        steps=steps,
        batch_size=batch_size,
        eval_every=max(1, steps // 4),
        test_subset=test_subset,
        seed=seed,
        device=device,
        out_dir=out,
        resume=(out / "last.pt").is_file(),
    )
    record = {"top1": result.final_eval["top1"], "curve": result.curve("top1"), "elapsed_s": result.elapsed_s}
    done.write_text(json.dumps(record))
    return record


def _row(spec: ModelSpec, top1: dict[str, float], quick: bool) -> dict[str, Any]:
    """One table row: every start's top-1, each pre-trained start's gap to random init and its verdict."""
    row: dict[str, Any] = {"size": spec.name, "params": _params(spec.build())}
    row.update({f"{method}_top1": round(top1[method], 2) for method in DEMO_METHODS})
    pretrained = [m for m in DEMO_METHODS if m != "random"]
    for method in pretrained:
        row[f"{method}_delta"] = round(top1[method] - top1["random"], 2)
    row["verdict"] = "; ".join(verdict(row[f"{m}_delta"], quick, m) for m in pretrained)
    return row


def _print_table(rows: list[dict[str, Any]], quick: bool, pre_steps: int, ft_steps: int) -> None:
    print(f"{'size':<12}{'params':>11}{'random':>9}{'template':>10}{'compress':>10}{'Δ tpl':>8}{'Δ cmp':>8}  verdict")
    for r in rows:
        print(
            f"{r['size']:<12}{r['params']:>11,}{r['random_top1']:>9.2f}{r['template_top1']:>10.2f}"
            f"{r['compress_top1']:>10.2f}{r['template_delta']:>+8.2f}{r['compress_delta']:>+8.2f}  {r['verdict']}"
        )
    print("[demo] " + "; ".join(f"{m}: {label}" for m, label in DEMO_METHODS.items()))
    if quick:
        print(
            f"[demo] --quick: {pre_steps} MAE steps and {ft_steps} fine-tuning steps, one seed: it shows that "
            "every stage runs, not which start is better. Run without --quick for the figures the README reports."
        )


def run_demo(
    out_dir: str | Path = "results/demo",
    *,
    quick: bool = False,
    seed: int = 0,
    device: str = "auto",
    data: str | None = None,
) -> list[dict[str, Any]]:
    """Run the demo end to end; returns the table rows (also written to ``out_dir/demo.json``)."""
    out = Path(out_dir)
    data = default_dataset() if data is None else data
    # Evaluations use a fixed, seeded subset of the test split to keep the demo short.
    pre_steps, ft_steps, batch, test_subset = (200, 60, 64, 2000) if quick else (1000, 200, 64, 5000)
    command = "python -m tucker_init demo" + (" --quick" if quick else "")
    start = time.perf_counter()
    targets = [TEMPLATE.with_size(depth, width) for depth, width in DEMO_TARGETS]
    rules = {spec.name: lossless_rules(TEMPLATE, spec) for spec in targets}
    budgets = {"pretrain_steps": pre_steps, "finetune_steps": ft_steps, "batch": batch, "test_subset": test_subset}
    _check_settings(out, {"seed": seed, "data": data, **budgets, "lossless_rules": rules})
    print(f"[demo] data: {data}; template: {TEMPLATE.name} ranks {TEMPLATE_RANKS}; output: {out}", flush=True)

    print(f"[1/3] MAE pre-training for {pre_steps} steps: the template, then a dense model of its size", flush=True)
    sources = {
        "template": _pretrain_once(out / "pretrain", False, pre_steps, seed, device, data),
        "compress": _pretrain_once(out / "pretrain_dense", True, pre_steps, seed, device, data),
    }
    rows, curves = [], {}
    for spec in targets:
        print(f"[2/3] {spec.name}: initialize, then fine-tune each start for {ft_steps} steps", flush=True)
        top1 = {}
        for method in DEMO_METHODS:
            folder = out / spec.name / method
            if method == "random":
                model = spec.build()  # seeded inside finetune; timm's own init
            else:
                model, _ = load_model(_init_once(spec, method, sources, out / spec.name / f"init_{method}", seed))
            result = _finetune_once(model, data, folder, ft_steps, seed, device, batch, test_subset)
            top1[method], curves[f"{spec.name} {method}"] = result["top1"], result["curve"]
        rows.append(_row(spec, top1, quick))

    print(f"[3/3] table and results ({DEMO_RESULTS})", flush=True)
    provenance = (
        f"{command} (seed {seed}, data {data}, {pre_steps} MAE steps at batch 128 for the template and for the "
        f"dense model, {ft_steps} fine-tune steps at batch {batch}, top-1 on {test_subset} test images)"
    )
    template = str(sources["template"].relative_to(out))
    summary = {"rows": rows, "curves": curves, "provenance": provenance, "template": template}
    (out / DEMO_RESULTS).write_text(json.dumps(summary, indent=1))
    _print_table(rows, quick, pre_steps, ft_steps)
    print(
        f"[demo] done in {time.perf_counter() - start:.0f} s; results in {out / DEMO_RESULTS}; "
        f"table files and figures: python -m analysis.demo_plots --out {out}",
        file=sys.stderr,
    )
    return rows
