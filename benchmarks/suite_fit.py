"""The training loss against the task's metric: what AutoLR can see.

AutoLR chooses its schedule from the training loss alone; the grids are
judged, and their best cell chosen, on the task's held-out metric. Per
task, batch size and optimizer this sets AutoLR's final training loss
(mean over seeds) beside the first-seed grid's two cells that matter:
the one with the lowest final training loss, and the one with the best
metric, which AutoLR is judged against. Where the best-metric cell is not
the lowest-training-loss one, the grid's winner trains worse and is
chosen by what the training loss cannot show (how the model generalises);
a schedule that follows the training loss lands nearer the other cell.
Plain dicts and lines, for `suite_report`.
"""

import numpy as np

from benchmarks.common import fmt
from benchmarks.suite_plan import (
    AUTOLR,
    OPTIMIZER,
    best_cell,
    grid_cells,
    make_spec,
    metric_value,
    run_key,
)
from benchmarks.suite_stats import LANDING_WITHIN, median_of, within


def training_loss_rows(settings, runs, summary):
    """One row per task, batch size and AutoLR method whose grid is run."""
    by_key = {r["key"]: r for r in runs}
    first = settings["seeds"][0]
    rows = []
    for task, info in settings["tasks"].items():
        for b in info["batch_sizes"]:
            cells = summary[task][str(b)]
            for method in [m for m in AUTOLR if m in cells]:
                grid = "grid_" + OPTIMIZER[method]
                done = [
                    by_key.get(run_key(make_spec(task, grid, b, first, *c)))
                    for c in grid_cells(settings, task, grid)
                ]
                if not done or any(r is None for r in done):
                    continue
                cell = best_cell(settings, task, grid, b, by_key)
                best = by_key[run_key(make_spec(task, grid, b, first, *cell))]
                mine = [
                    r
                    for r in runs
                    if r["task"] == task
                    and r["batch_size"] == b
                    and r["method"] == method
                ]
                ours = [r["final_train_loss"] for r in mine]
                row = _row(task, b, method, info["metric"], ours, done, best)
                row["autolr_metric"] = cells[method]["mean"]
                row["landing_lrs"] = [r.get("autolr_peak_lr") for r in mine]
                rows.append(row)
    return rows


def _row(task, b, method, metric, ours, grid, best):
    """The row of one cell: AutoLR's training losses `ours` (one per
    seed, None where not finite), the grid's first-seed records and its
    best cell's record (`suite_plan.best_cell`)."""
    trained = [r for r in grid if r["final_train_loss"] is not None]
    lowest = min(trained, key=lambda r: r["final_train_loss"])
    finite = [v for v in ours if v is not None]
    autolr = float(np.mean(finite)) if len(finite) == len(ours) else None
    floor = lowest["final_train_loss"]
    return {
        "task": task,
        "batch_size": b,
        "method": method,
        "autolr_train_loss": autolr,
        "lowest_train_loss": floor,
        "lowest_peak_lr": lowest["peak_lr"],
        "lowest_metric": metric_value(lowest, metric),
        "best_peak_lr": best["peak_lr"],
        "best_train_loss": best["final_train_loss"],
        "best_metric": metric_value(best, metric),
        "autolr_over_lowest": _ratio(autolr, floor),
        "best_over_lowest": _ratio(best["final_train_loss"], floor),
    }


def _ratio(value, floor):
    """`value / floor`; None where either is missing or `floor` is 0 (a
    training loss that underflowed)."""
    return None if value is None or not floor else value / floor


def training_loss_section(rows, show):
    """The markdown section of `rows`; `show(task, value)` prints a
    metric."""
    if not rows:
        return []
    out = [
        "## Training loss against the metric",
        "",
        "Final training loss (the last epoch's mean) of AutoLR (mean over "
        "seeds) and of the first-seed grid's cell with the lowest training "
        "loss and its cell with the best metric, each with its peak LR and "
        "metric. AutoLR sees only the training loss.",
        "",
        "| task | B | method | AutoLR: train loss, metric | grid lowest "
        "train loss: LR, loss, metric | grid best metric: LR, loss, metric "
        "| AutoLR / lowest | best / lowest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        task = r["task"]
        out.append(
            f"| {task} | {r['batch_size']} | {r['method']} | "
            f"{fmt(r['autolr_train_loss'], '.4g')}, "
            f"{show(task, r['autolr_metric'])} | "
            f"{r['lowest_peak_lr']:g}, {fmt(r['lowest_train_loss'], '.4g')}, "
            f"{show(task, r['lowest_metric'])} | "
            f"{r['best_peak_lr']:g}, {fmt(r['best_train_loss'], '.4g')}, "
            f"{show(task, r['best_metric'])} | "
            f"{fmt(r['autolr_over_lowest'], '.3g')} | "
            f"{fmt(r['best_over_lowest'], '.3g')} |"
        )
    apart = [r for r in rows if r["best_peak_lr"] != r["lowest_peak_lr"]]
    near = {
        cell: sum(
            within(lr, r[f"{cell}_peak_lr"], LANDING_WITHIN)
            for r in rows
            for lr in r["landing_lrs"]
        )
        for cell in ("best", "lowest")
    }
    landings = sum(len(r["landing_lrs"]) for r in rows)
    out += [
        "",
        f"On {len(apart)} of {len(rows)} cells the grid's best cell by the "
        "metric is not its lowest by training loss; there its training "
        "loss is a median "
        f"{fmt(median_of([r['best_over_lowest'] for r in apart]), '.3g')}x "
        "the lowest. AutoLR's training loss over the grid's lowest: median "
        f"{fmt(median_of([r['autolr_over_lowest'] for r in rows]), '.3g')}"
        "x over all cells. AutoLR's landing LR is within "
        f"{LANDING_WITHIN:g}x of the peak LR of the grid's best cell by the "
        f"metric in {near['best']} of {landings} runs, and of its "
        f"lowest-training-loss cell in {near['lowest']}.",
    ]
    return out
