"""The README's demo: pre-train a small ViT template with masked image modeling, initialize
three target sizes from it, fine-tune each next to a randomly initialized twin, print the
table and write the results (``demo.json``: table rows, accuracy curves, provenance, the
template's path). Every stage is skipped when its output exists, so an interrupted demo picks
up where it stopped. The table files and figures are drawn from ``demo.json`` by
``python -m analysis.demo_plots`` (``scripts/demo.sh`` runs both): the core draws nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .pipeline import ModelSpec, finetune_model, init_model, load_model, pretrain, save_model
from .training import TrainResult
from .training.data import default_dataset

__all__ = ["DEMO_RESULTS", "DEMO_TARGETS", "run_demo"]

TEMPLATE = ModelSpec("vit", depth=6, width=128)
TEMPLATE_RANKS = (36, 64, 64)
DEMO_TARGETS = ((3, 64), (6, 128), (8, 192))  # smaller, same, deeper and wider than the template
DEMO_RESULTS = "demo.json"  # in the output folder; what analysis.demo_plots reads
# One seed's top-1 moves by about this much between seeds at these budgets (README: random init's
# std over 3 seeds is 2-8 points); a smaller gap says nothing.
NOISE_POINTS = 3.0


def verdict(delta: float, quick: bool) -> str:
    """What one seed's gap (template - random, points) says, in words."""
    if abs(delta) < NOISE_POINTS:
        return "within one seed's noise" + (": --quick is too short to tell" if quick else "")
    return "template ahead" if delta > 0 else "random init ahead"


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


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
    print(f"[demo] data: {data}; template: {TEMPLATE.name} ranks {TEMPLATE_RANKS}; output: {out}", flush=True)

    template_path = out / "pretrain" / "template.safetensors"
    if not template_path.is_file():
        print(f"[1/3] pre-training the template with MAE for {pre_steps} steps", flush=True)
        pretrain(
            TEMPLATE,
            data,
            out / "pretrain",
            ranks=TEMPLATE_RANKS,
            steps=pre_steps,
            batch_size=128,
            seed=seed,
            device=device,
            resume=(out / "pretrain" / "last.pt").is_file(),
        )

    rows, curves = [], {}
    for depth, width in DEMO_TARGETS:
        spec = TEMPLATE.with_size(depth, width)
        print(
            f"[2/3] {spec.name}: initialize from the template, then fine-tune both inits for {ft_steps} steps",
            flush=True,
        )
        init_path = out / spec.name / "init.safetensors"
        if not init_path.is_file():
            model, report = init_model(spec, template_path, depth="interpolate", width="slice", seed=seed)
            save_model(init_path, model, spec)
            (out / spec.name / "init_report.txt").write_text(str(report))
        results = {}
        for method in ("random", "template"):
            if method == "random":
                model = spec.build()  # seeded inside finetune; timm's own init
            else:
                model, _ = load_model(init_path)
            results[method] = _finetune_once(
                model, data, out / spec.name / method, ft_steps, seed, device, batch, test_subset
            )
            curves[f"{spec.name} {method}"] = results[method]["curve"]
        rows.append(
            {
                "size": spec.name,
                "params": _params(spec.build()),
                "random_top1": round(results["random"]["top1"], 2),
                "template_top1": round(results["template"]["top1"], 2),
                "delta": round(results["template"]["top1"] - results["random"]["top1"], 2),
            }
        )
        rows[-1]["verdict"] = verdict(rows[-1]["delta"], quick)

    print(f"[3/3] table and results ({DEMO_RESULTS})", flush=True)
    provenance = (
        f"{command} (seed {seed}, data {data}, {pre_steps} MAE steps at batch 128, {ft_steps} fine-tune steps "
        f"at batch {batch}, top-1 on {test_subset} test images)"
    )
    template = str(template_path.relative_to(out))
    summary = {"rows": rows, "curves": curves, "provenance": provenance, "template": template}
    (out / DEMO_RESULTS).write_text(json.dumps(summary, indent=1))

    header = f"{'size':<14}{'params':>10}{'random top1':>14}{'template top1':>16}{'delta':>8}  verdict"
    print(header)
    for r in rows:
        print(
            f"{r['size']:<14}{r['params']:>10,}{r['random_top1']:>14.2f}{r['template_top1']:>16.2f}"
            f"{r['delta']:>+8.2f}  {r['verdict']}"
        )
    if quick:
        print(
            f"[demo] --quick: {pre_steps} MAE steps and {ft_steps} fine-tuning steps, one seed; gaps under "
            f"{NOISE_POINTS:g} points are noise. Run without --quick for the figures the README reports."
        )
    print(
        f"[demo] done in {time.perf_counter() - start:.0f} s; results in {out / DEMO_RESULTS}; "
        f"table files and figures: python -m analysis.demo_plots --out {out}",
        file=sys.stderr,
    )
    return rows
