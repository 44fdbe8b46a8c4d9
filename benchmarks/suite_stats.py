"""The suite's statistics: what the recorded runs say against its goals.

Per task and batch size, the mean and spread over seeds of each method's
metric and the tuned grids' best cells (`summarize`); one row per AutoLR
run: switch, overshoot, landing LR (`autolr_table`); the verdicts, AutoLR
within the grid's tolerance and above every zero-tuning alternative
(`judge`, `verdicts`); the AutoLR rows of every code version and candidate
default recorded (`autolr_history`) and the goals each one meets on the
whole plan (`candidate_goals`); the verdicts and the goals of each half
of the suite apart (`by_half`). Plain dicts and lists, for
`suite_report`.
"""

import numpy as np

from benchmarks.suite_plan import (
    ALTERNATIVES,
    AUTOLR,
    GRIDS,
    METHODS,
    OPTIMIZER,
    best_cell,
    grid_cells,
    make_spec,
    metric_value,
    options_label,
    run_key,
)
from benchmarks.tasks import HALVES, TASKS

WITHIN_POINTS = 0.01  # Classification: within 1 accuracy point.
WITHIN_RELATIVE = 0.03  # Val loss, RMSE: within 3 %.
# The goals on max LR / the LR at the smoothed minimum: in every run, and
# its median; and on the landing LR: within this factor of the grid's best
# peak LR.
PAST_MINIMUM_GOAL, MEDIAN_PAST_MINIMUM_GOAL = 4.0, 3.0
LANDING_WITHIN = 3.0


def summarize(settings, runs):
    """{task: {batch: {method: stats of the metric over seeds}}}."""
    by_key = {r["key"]: r for r in runs}
    summary = {}
    for task, info in settings["tasks"].items():
        summary[task] = {}
        for b in info["batch_sizes"]:
            cells = summary[task][str(b)] = {}
            for method in METHODS:
                cell = None
                if method in GRIDS:
                    cell = best_cell(settings, task, method, b, by_key)
                    if cell is None:
                        continue
                found = [
                    by_key[k]
                    for k in (
                        run_key(make_spec(task, method, b, seed, *(cell or ())))
                        for seed in settings["seeds"]
                    )
                    if k in by_key
                ]
                if found:
                    cells[method] = _stats(settings, task, method, found, cell)
    return summary


def _stats(settings, task, method, records, cell):
    values = [metric_value(r, TASKS[task].metric) for r in records]
    stats = {
        "mean": float(np.mean(values)),
        "spread": float((max(values) - min(values)) / 2),
        "values": values,
        "seeds": [r["seed"] for r in records],
        "failed": sum(r.get(TASKS[task].metric) is None for r in records),
        "runs_needed": 1,
    }
    if cell is not None:
        lrs = settings["tasks"][task][f"{OPTIMIZER[method]}_lrs"]
        stats.update(
            best_peak_lr=cell[0],
            best_warmup_fraction=cell[1],
            best_at_grid_edge=cell[0] in (min(lrs), max(lrs)),
            runs_needed=len(grid_cells(settings, task, method))
            + len(settings["seeds"])
            - 1,
        )
    return stats


def autolr_table(settings, runs, summary):
    """One row per AutoLR run: switch, overshoot, grid-best peak."""
    rows = []
    for r in runs:
        if r["method"] not in AUTOLR:
            continue
        grid = "grid_" + r["optimizer"]
        best = summary[r["task"]][str(r["batch_size"])].get(grid, {})
        best_peak = best.get("best_peak_lr")
        peak = r.get("autolr_peak_lr")
        max_lr, lowest = r.get("autolr_max_lr"), r.get("autolr_minimum_lr")
        rows.append(
            {
                "key": r["key"],
                "task": r["task"],
                "batch_size": r["batch_size"],
                "method": r["method"],
                "seed": r["seed"],
                "reason": r.get("autolr_reason"),
                "switch_step": r.get("autolr_switch_step"),
                "total_steps": r["total_steps"],
                "max_lr": max_lr,
                "minimum_lr": lowest,
                "landing_lr": peak,
                "overshoot": r.get("autolr_overshoot"),
                "past_minimum": (
                    None if max_lr is None or not lowest else max_lr / lowest
                ),
                "rescues": r.get("autolr_rescues", []),
                "restored_copy_steps": r.get("autolr_restored_copy_steps"),
                "grid_best_peak_lr": best_peak,
                "peak_over_grid_best": (
                    None if peak is None or not best_peak else peak / best_peak
                ),
            }
        )
    return rows


def largest_of(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def median_of(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def judge(task, method, ours, cells):
    """The goals for one AutoLR mean `ours` of `method`, against the
    grid of its optimizer and the zero-tuning alternatives in `cells`
    (one task and batch size of `summarize`)."""
    sign = 1.0 if TASKS[task].higher_is_better else -1.0
    grid = cells.get("grid_" + OPTIMIZER[method])
    near = None
    if grid is not None:
        if TASKS[task].kind == "classification":
            near = ours >= grid["mean"] - WITHIN_POINTS
        else:
            near = ours <= grid["mean"] * (1 + WITHIN_RELATIVE)
    alts = [(cells[m]["mean"], m) for m in ALTERNATIVES if m in cells]
    best_alt = max(alts, key=lambda a: sign * a[0]) if alts else None
    return {
        "grid": None if grid is None else grid["mean"],
        "near_grid": near,
        "best_alternative": best_alt and best_alt[1],
        "best_alternative_value": best_alt and best_alt[0],
        "beats_alternatives": (
            None if best_alt is None else sign * ours > sign * best_alt[0]
        ),
    }


def verdicts(settings, summary):
    """Per task, batch and AutoLR method: near the grid, above the rest?"""
    out = []
    for task, info in settings["tasks"].items():
        for b, cells in summary[task].items():
            for method in [m for m in AUTOLR if m in cells]:
                ours = cells[method]["mean"]
                out.append(
                    {
                        "task": task,
                        "batch_size": int(b),
                        "method": method,
                        "metric": info["metric"],
                        "autolr": ours,
                        **judge(task, method, ours, cells),
                    }
                )
    return out


def _versions(records):
    """The AutoLR records by version, oldest first: the code, then the
    options of a candidate default (`options_label`)."""
    out = {}
    for r in records:
        if r["method"] in AUTOLR:
            label = options_label(r.get("autolr_options", {}))
            version = r.get("code") + (f" {label}" if label else "")
            out.setdefault(version, []).append(r)
    return out


def _group(records, task, batch_size, method):
    return [
        r
        for r in records
        if r["task"] == task
        and r["batch_size"] == batch_size
        and r["method"] == method
    ]


def autolr_history(settings, records):
    """The AutoLR rows of every code version recorded, when there are
    several: per version, task, batch and method, the mean metric over
    seeds and the median overshoot (max LR / landing LR)."""
    versions = _versions(records)
    if len(versions) < 2:
        return []
    out = []
    for code, found in versions.items():
        for task, info in settings["tasks"].items():
            for b in info["batch_sizes"]:
                for method in AUTOLR:
                    group = _group(found, task, b, method)
                    if not group:
                        continue
                    values = [metric_value(r, info["metric"]) for r in group]
                    out.append(
                        {
                            "code": code,
                            "task": task,
                            "batch_size": b,
                            "method": method,
                            "seeds": len(group),
                            "mean": float(np.mean(values)),
                            "median_overshoot": median_of(
                                [r.get("autolr_overshoot") for r in group]
                            ),
                        }
                    )
    return out


def candidate_goals(settings, summary, runs, records):
    """The defaults (the AutoLR runs of `runs`, those of the report) and
    every version of `records` recorded on the whole plan (each task,
    batch size, AutoLR method and seed, under the tasks' current
    fingerprints) against the goals: per method, the cells (task and batch
    size) within the grid's tolerance and those that beat every
    alternative (the grids and alternatives of `summary`); over all its
    runs, the largest LR over the LR at the smoothed minimum, and the
    landing LRs within `LANDING_WITHIN` of the grid's best peak."""
    versions = {"defaults": [r for r in runs if r["method"] in AUTOLR]}
    versions.update(_versions(records))
    out = []
    for code, found in versions.items():
        row = _goals(settings, summary, found)
        if row is not None:
            out.append({"code": code, **row})
    return out


def _goals(settings, summary, records):
    """`candidate_goals` of one version's `records`; `None` unless they
    cover the whole plan."""
    seeds = settings["seeds"]
    groups = {}
    for task, info in settings["tasks"].items():
        for b in info["batch_sizes"]:
            for method in AUTOLR:
                by_seed = {
                    r["seed"]: r for r in _group(records, task, b, method)
                }
                group = [by_seed[s] for s in seeds if s in by_seed]
                if len(group) < len(seeds):
                    return None
                groups[task, b, method] = group
    row = {"runs": len(groups) * len(seeds)}
    for (task, b, method), group in groups.items():
        metric = settings["tasks"][task]["metric"]
        mean = float(np.mean([metric_value(r, metric) for r in group]))
        goals = judge(task, method, mean, summary[task][str(b)])
        tally = row.setdefault(
            method,
            dict.fromkeys(("cells", "near_grid", "beats_alternatives"), 0),
        )
        tally["cells"] += 1
        tally["near_grid"] += bool(goals["near_grid"])
        tally["beats_alternatives"] += bool(goals["beats_alternatives"])
    past = [
        r["autolr_max_lr"] / r["autolr_minimum_lr"]
        for group in groups.values()
        for r in group
        if r.get("autolr_max_lr") and r.get("autolr_minimum_lr")
    ]
    row.update(
        median_past_minimum=median_of(past),
        largest_past_minimum=largest_of(past),
        past_minimum_at_most_4=sum(v <= PAST_MINIMUM_GOAL for v in past),
        landing_near_grid=sum(
            landing_near_grid(r, summary[task][str(b)])
            for (task, b, _), group in groups.items()
            for r in group
        ),
    )
    return row


def landing_near_grid(record, cells):
    """Whether the AutoLR run `record` landed within `LANDING_WITHIN` of
    the best peak LR of its optimizer's grid in `cells` (one task and
    batch size of `summarize`)."""
    grid = cells.get("grid_" + record["optimizer"]) or {}
    return within(
        record.get("autolr_peak_lr"), grid.get("best_peak_lr"), LANDING_WITHIN
    )


def within(lr, peak, factor):
    """`lr` within `factor` of `peak`, either side; False where either is
    missing."""
    return bool(lr and peak and peak / factor <= lr <= peak * factor)


def by_half(settings, summary, runs, records):
    """Per half of the suite (`tasks.HALVES`) that `settings` holds a task
    of: its tasks, its verdicts and its candidate defaults against the
    goals."""
    out = {}
    for name, names in HALVES.items():
        half = {
            **settings,
            "tasks": {t: v for t, v in settings["tasks"].items() if t in names},
        }
        if half["tasks"]:
            out[name] = {
                "name": name,
                "tasks": list(half["tasks"]),
                "verdicts": verdicts(half, summary),
                "candidates": candidate_goals(half, summary, runs, records),
            }
    return out
