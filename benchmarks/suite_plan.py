"""The suite's plan: its methods, tasks' settings, run keys and records.

What `suite.py` runs and `suite_report.py` reports share this module: the
methods and their optimizers, the budgets of the full and quick suites,
each task's fingerprint (what changes its results), the key of every run,
the runs of the plan (single runs, first-seed grids, best-cell reruns), and
the recorded runs that count. No TensorFlow import.
"""

import argparse
import hashlib
import json

from benchmarks import resumable_runs
from benchmarks.tasks import TASKS

FORMAT_VERSION = 1
WEIGHT_DECAY = 1e-4  # Of AdamP and LAMB, in AutoLR's runs and the grids.

AUTOLR = ("autolr_adamp", "autolr_lamb")
GRIDS = ("grid_adamp", "grid_lamb")
ALTERNATIVES = (
    "adam_constant",
    "adamw_cosine",
    "schedulefree_adamw",
    "schedulefree_reference",
    "prodigy_cosine",
)
METHODS = AUTOLR + GRIDS + ALTERNATIVES
ZERO_TUNING = AUTOLR + ALTERNATIVES
OPTIMIZER = {
    "autolr_adamp": "adamp",
    "autolr_lamb": "lamb",
    "grid_adamp": "adamp",
    "grid_lamb": "lamb",
    "adam_constant": "adam",
    "adamw_cosine": "adamw",
    "schedulefree_adamw": "schedulefree_adamw",
    "schedulefree_reference": "schedulefree_reference",
    "prodigy_cosine": "prodigy",
}
FULL = {"seeds": [0, 1, 2], "warmups": [0.05, 0.2], "tasks": list(TASKS)}
QUICK = {
    "seeds": [0],
    "warmups": [0.05],
    "tasks": ["digits", "lm"],
    "lrs": [1e-3, 1e-2],  # One 2 x 1 grid per optimizer.
}


# ----------------------------------------------------------------------
# Settings and command-line values.


def parse_ints(text):
    """`--seeds 0,1,2`: a list of ints."""
    return [int(v) for v in text.split(",") if v.strip()]


def parse_names(choices):
    """An argument type: comma-separated names, each one of `choices`."""

    def parse(text):
        names = [v.strip() for v in text.split(",") if v.strip()]
        unknown = sorted(set(names) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown}; choose from {list(choices)}"
            )
        return names

    return parse


def options_label(options):
    """`key=value,...` of AutoLR options, sorted; '' for the defaults."""
    return ",".join(f"{k}={options[k]}" for k in sorted(options))


def resolve_settings(args):
    """Per task: budget, batch sizes and grids of the full or quick suite."""
    preset = QUICK if args.quick else FULL
    names = [t for t in preset["tasks"] if t in (args.tasks or TASKS)]
    if args.tasks and args.quick:
        names = list(args.tasks)
    settings = {
        "quick": bool(args.quick),
        "seeds": args.seeds or list(preset["seeds"]),
        "warmups": list(preset["warmups"]),
        "weight_decay": WEIGHT_DECAY,
        "methods": list(METHODS),
        "tasks": {},
    }
    for name in names:
        task = TASKS[name]
        budget = task.budget(args.quick)
        settings["tasks"][name] = {
            "title": task.title,
            "source": task.source,
            "metric": task.metric,
            "higher_is_better": task.higher_is_better,
            "epochs": budget.epochs,
            "batch_sizes": list(budget.batch_sizes),
            "data": dict(budget.data),
            "adamp_lrs": list(preset.get("lrs", task.adamp_lrs)),
            "lamb_lrs": list(preset.get("lrs", task.lamb_lrs)),
        }
    return settings


def fingerprint(settings, task):
    """Hash of what changes a run's result of `task`."""
    info = settings["tasks"][task]
    blob = {
        "task": task,
        "epochs": info["epochs"],
        "data": info["data"],
        "weight_decay": WEIGHT_DECAY,
        "format": FORMAT_VERSION,
    }
    if TASKS[task].revision:
        blob["revision"] = TASKS[task].revision
    text = json.dumps(blob, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------
# Runs of the plan and their records.


def run_key(spec):
    lr, warmup = spec.get("peak_lr"), spec.get("warmup_fraction")
    cell = "" if lr is None else f"/lr{lr:.6g}/wu{warmup:g}"
    if spec.get("autolr_options"):
        cell += "/" + options_label(spec["autolr_options"])
    return (
        f"{spec['task']}/{spec['method']}/B{spec['batch_size']}/"
        f"seed{spec['seed']}{cell}"
    )


def make_spec(task, method, batch_size, seed, peak_lr=None, warmup=None):
    spec = {
        "task": task,
        "method": method,
        "optimizer": OPTIMIZER[method],
        "batch_size": batch_size,
        "seed": seed,
    }
    if peak_lr is not None:
        spec.update(peak_lr=peak_lr, warmup_fraction=warmup)
    return spec


def grid_cells(settings, task, method):
    lrs = settings["tasks"][task][f"{OPTIMIZER[method]}_lrs"]
    return [(lr, w) for lr in lrs for w in settings["warmups"]]


def plan_fixed(settings, methods, autolr_options=None):
    """Single runs (every seed) and the first-seed grids; the AutoLR runs
    with `autolr_options` where given."""
    first = settings["seeds"][0]
    specs = []
    for task, info in settings["tasks"].items():
        for b in info["batch_sizes"]:
            for method in [m for m in methods if m in GRIDS]:
                for cell in grid_cells(settings, task, method):
                    specs.append(make_spec(task, method, b, first, *cell))
            for seed in settings["seeds"]:
                for method in [m for m in methods if m in ZERO_TUNING]:
                    spec = make_spec(task, method, b, seed)
                    if autolr_options and method in AUTOLR:
                        spec["autolr_options"] = dict(autolr_options)
                    specs.append(spec)
    return specs


def metric_value(record, metric):
    """The record's metric, the failed value where not finite."""
    value = record.get(metric)
    return record["failed_value"] if value is None else value


def best_cell(settings, task, method, batch_size, done):
    """The grid cell with the best first-seed metric, once all are run."""
    info = settings["tasks"][task]
    sign = 1.0 if info["higher_is_better"] else -1.0
    first = settings["seeds"][0]
    scored = []
    for cell in grid_cells(settings, task, method):
        record = done.get(
            run_key(make_spec(task, method, batch_size, first, *cell))
        )
        if record is None:
            return None
        scored.append((sign * metric_value(record, info["metric"]), cell))
    return max(scored, key=lambda s: s[0])[1] if scored else None


def plan_reruns(settings, methods, done):
    specs = []
    for task, info in settings["tasks"].items():
        for b in info["batch_sizes"]:
            for method in [m for m in methods if m in GRIDS]:
                cell = best_cell(settings, task, method, b, done)
                if cell is not None:
                    for seed in settings["seeds"][1:]:
                        specs.append(make_spec(task, method, b, seed, *cell))
    return specs


def reported_runs(settings, done):
    specs = plan_fixed(settings, METHODS)
    specs += plan_reruns(settings, METHODS, done)
    return [done[k] for k in map(run_key, specs) if k in done]


def load_progress(path, fps):
    """Recorded runs whose fingerprint matches their task's, by key (the
    newest record of a key)."""
    return {record["key"]: record for record in all_records(path, fps)}


def all_records(path, fps):
    """Every recorded run whose fingerprint matches its task's, oldest
    first: reruns after a change to AutoLR keep the records before it."""
    return resumable_runs.read_records(path, fingerprint_in(fps))


def fingerprint_in(fps):
    return lambda record: fps.get(record.get("task"))
