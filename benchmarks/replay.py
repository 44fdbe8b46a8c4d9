"""Benchmark: AutoLR's trajectory on a suite task, replayed as fixed
schedules.

AutoLR ramps the LR geometrically; at its switch step s it puts back the
weights (and optimizer state) copied at an earlier step c and decays (its
default decay, `switch_ceiling.DECAY`) from the landing LR L to 0 at the end of
the budget T: the weights that decay have seen the ramp up to step c only, and
s - c steps are lost. A replay of (c, s, L) is a fixed schedule: AutoLR's ramp
up to step c, its decay from L to 0 over the next T - s steps, then LR 0 for
the last s - c steps (the same budget; the batches after c come in another
order, and BatchNorm statistics still move at LR 0).

Per task, batch size, optimizer (AdamP and LAMB) and seed, from the
newest AutoLR record with default options in the suite's progress file and
the grid's best cell on seed 0 (peak p*, as `suite_plan.best_cell` chooses
it), the cells:
1. `as run`: c, s and L of the record (c = s where nothing was restored);
2. `land at half`: the same c and s, L = minimum_lr / 2;
3. `copy at minimum`: c = the ramp step of the record's minimum_lr
   (rounded down), the same s, L = minimum_lr;
4. `copy at minimum, land at half`: c as in 3, L = minimum_lr / 2;
5. `land at grid best`: the same c and s, L = p*;
6. `ramp to grid best`: c = s = the first ramp step at or above p*, L = p*;
7. `grid best`: the grid's own schedule (linear warmup, cosine to 0);
and the record's own metric as a reference row (`AutoLR run`). For LAMB,
cells 1 and 7 again with `keras_autolr.LAMB` instead of Keras's, its
biases and normalisation weights (`EXCLUDED`) left out of the weight
decay and the trust ratio, as BERT's LAMB does (Keras's LAMB decays and
layer-adapts every variable):
8. `as run, LAMB excluding biases and norms`;
9. `grid best, LAMB excluding biases and norms`.

    python -m benchmarks.replay                       # lm, 32 runs, ~30 min
    python -m benchmarks.replay --quick --workers 1   # smoke test, ~1 min

`--quick`: the quick budgets, cells 1, 6, 7 (and 9 for LAMB); where no
record matches, a synthetic stand-in, marked as such (s = 0.3 T, c = s -
2, minimum_lr = L = the ramp's LR at 0.27 T; grid best 3e-3, warmup 0.2).
Writes `replay.json` and `replay.md` to `--out`.
"""

import argparse
import itertools
import math
import multiprocessing
import sys
import time
from pathlib import Path

# The suite's records, fingerprints and grid choice; how it shows a metric;
# its optimizers; AutoLR's schedule, fixed.
from benchmarks import suite_plan, suite_report, switch_ceiling
from benchmarks.common import (
    CACHE,
    RESULTS,
    configure_threads,
    environment,
    finite,
    write_result,
)
from benchmarks.suite_run import make_optimizer as suite_optimizer
from benchmarks.suite_run import warmup_cosine
from benchmarks.tasks import TASKS

PROGRESS = RESULTS / "suite.progress.jsonl"  # The suite's records.
FULL = {"cells": [1, 2, 3, 4, 5, 6, 7, 8, 9]}
QUICK = {"cells": [1, 6, 7, 9]}
NAMES = {
    1: "as run",
    2: "land at half",
    3: "copy at minimum",
    4: "copy at minimum, land at half",
    5: "land at grid best",
    6: "ramp to grid best",
    7: "grid best",
    8: "as run, LAMB excluding biases and norms",
    9: "grid best, LAMB excluding biases and norms",
}
# Cells 8 and 9 (LAMB tables only): cells 1 and 7 on this optimizer.
EXCLUDING = {8: 1, 9: 7}
# Biases, and the scales and offsets of LayerNormalization and
# BatchNormalization.
EXCLUDED = ["bias", "gamma", "beta"]
STEPS = ("copy_step", "switch_step", "lost_steps")
LRS = ("ramp_lr_at_copy", "landing_lr", "landing_over_minimum")
# AutoLR's defaults, which set its ramp.
MIN_LR, MAX_LR = switch_ceiling.MIN_LR, switch_ceiling.MAX_LR
MAX_WARMUP_FRACTION = switch_ceiling.MAX_WARMUP_FRACTION
OPTIMIZERS = ("adamp", "lamb")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Lists are comma-separated.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test, ~1 minute"
    )
    parser.add_argument(
        "--tasks",
        type=suite_plan.parse_names(TASKS),
        default=["lm"],
        help="tasks",
    )
    parser.add_argument(
        "--batch-sizes",
        type=suite_plan.parse_ints,
        help="batch sizes; None: the task's",
    )
    parser.add_argument(
        "--optimizers",
        type=suite_plan.parse_names(OPTIMIZERS),
        default=list(OPTIMIZERS),
        help="optimizers",
    )
    parser.add_argument(
        "--seeds", type=suite_plan.parse_ints, default=[0], help="seeds"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE, help="data cache"
    )
    parser.add_argument(
        "--progress", type=Path, default=PROGRESS, help="the suite's records"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="output folder"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    return args


def ramp_lr(step, total_steps):
    """AutoLR's exponential ramp at `step`, held at MAX_LR after it."""
    ramp_steps = int(MAX_WARMUP_FRACTION * total_steps)
    return MIN_LR * (MAX_LR / MIN_LR) ** (min(step, ramp_steps) / ramp_steps)


def ramp_step(lr, total_steps):
    """The (fractional) step at which AutoLR's ramp reaches `lr`."""
    ramp_steps = int(MAX_WARMUP_FRACTION * total_steps)
    return ramp_steps * math.log(lr / MIN_LR) / math.log(MAX_LR / MIN_LR)


def replay_schedule(copy, switch, landing, total_steps):
    """AutoLR's formula with its switch at `copy` and its budget cut by
    switch - copy steps: the ramp of the full budget before `copy`, the
    decay from `landing` over total_steps - switch steps, then LR 0."""
    end = total_steps - (switch - copy)
    return switch_ceiling.make_schedule(copy, landing, total_steps, end)


def find_sources(args, task, b, optimizer):
    """(grid best, {seed: newest default AutoLR record or None}) of the
    progress file for `optimizer`, among the records of the task's current
    settings."""
    ns = argparse.Namespace(quick=args.quick, tasks=[task], seeds=None)
    settings = suite_plan.resolve_settings(ns)
    fps = {task: suite_plan.fingerprint(settings, task)}
    done = suite_plan.load_progress(args.progress, fps)
    cell = suite_plan.best_cell(settings, task, "grid_" + optimizer, b, done)
    best = cell and dict(peak_lr=cell[0], warmup_fraction=cell[1])
    if best is None and args.quick:
        best = dict(peak_lr=3e-3, warmup_fraction=0.2, synthetic=True)
    method = "autolr_" + optimizer
    newest = {}
    for r in suite_plan.all_records(args.progress, fps):
        mine = (r["task"], r["method"], r["batch_size"]) == (task, method, b)
        if mine and not r.get("autolr_options"):
            newest[r["seed"]] = r  # The file's order: the newest last.
    return best, {seed: newest.get(seed) for seed in args.seeds}


def synthetic(total_steps):
    """The stand-in of a record in quick mode."""
    s = round(0.3 * total_steps)
    lr = ramp_lr(round(0.27 * total_steps), total_steps)
    record = dict(code="none", synthetic=True, failed_value=None)
    record.update(autolr_switch_step=s, autolr_restored_copy_at_switch=s - 2)
    return dict(record, autolr_peak_lr=lr, autolr_minimum_lr=lr)


def plan(record, best, total_steps, numbers, optimizer="adamp"):
    """The cells `numbers` of one table: copy step, switch step and
    landing LR of a replay, or the grid's peak and warmup fraction; cells
    8 and 9 with `optimizer` LAMB only."""
    s = record["autolr_switch_step"]
    c = record.get("autolr_restored_copy_at_switch")
    c = s if c is None else c
    minimum = record.get("autolr_minimum_lr")
    replays = {1: (c, s, record["autolr_peak_lr"])}
    if minimum is not None:
        at_minimum = min(math.floor(ramp_step(minimum, total_steps) + 1e-9), s)
        replays[2] = (c, s, minimum / 2)
        replays[3] = (at_minimum, s, minimum)
        replays[4] = (at_minimum, s, minimum / 2)
    if best is not None:
        top = math.ceil(ramp_step(best["peak_lr"], total_steps) - 1e-9)
        replays[5] = (c, s, best["peak_lr"])
        replays[6] = (top, top, best["peak_lr"])

    def schedule(n):
        if n in replays:
            copy, switch, landing = replays[n]
            cell = dict(copy_step=copy, switch_step=switch)
            cell.update(lost_steps=switch - copy, landing_lr=landing)
            cell["ramp_lr_at_copy"] = ramp_lr(copy, total_steps)
            return cell
        if n == 7 and best is not None:
            cell = dict(landing_lr=best["peak_lr"])
            return dict(cell, warmup_fraction=best["warmup_fraction"])
        return None

    cells = []
    for n in numbers:
        if n in EXCLUDING and optimizer != "lamb":
            continue
        cell = schedule(EXCLUDING.get(n, n))
        if cell is None:
            continue
        if n in EXCLUDING:
            cell["optimizer"] = "lamb_excluding"
        ratio = None if minimum is None else cell["landing_lr"] / minimum
        cells.append(dict(cell, name=NAMES[n], landing_over_minimum=ratio))
    return cells


def make_optimizer(name, schedule):
    """The suite's optimizers, and `lamb_excluding`: `keras_autolr.LAMB`
    with the same weight decay, `EXCLUDED` left out of it and of the
    trust ratio."""
    if name != "lamb_excluding":
        return suite_optimizer(name, schedule)
    from keras_autolr import LAMB

    return LAMB(
        learning_rate=schedule,
        weight_decay=suite_plan.WEIGHT_DECAY,
        exclude_from_weight_decay=EXCLUDED,
    )


_DATA = {}


def train(job):
    """One run of a fixed schedule, trained as `suite_run.train_one` trains."""
    import keras

    cache_dir, quick, name, batch_size, optimizer, seed, cell = job
    optimizer = cell.get("optimizer", optimizer)
    task = TASKS[name]
    if name not in _DATA:
        _DATA[name] = task.load(cache_dir, quick)
    data, epochs = _DATA[name], task.budget(quick).epochs
    total_steps = epochs * math.ceil(len(data["x"]) / batch_size)
    if "warmup_fraction" in cell:
        peak, warmup = cell["landing_lr"], cell["warmup_fraction"]
        schedule = warmup_cosine(peak, warmup, total_steps)
    else:
        args = (cell["copy_step"], cell["switch_step"], cell["landing_lr"])
        schedule = replay_schedule(*args, total_steps)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = task.build(data)
    model.compile(
        optimizer=make_optimizer(optimizer, schedule),
        loss=task.loss(),
        metrics=["accuracy"] if task.kind == "classification" else None,
    )
    start = time.perf_counter()
    fit = dict(batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    history = model.fit(data["x"], data["y"], **fit)
    metrics = task.evaluate(model, data)
    value = metrics[task.metric]
    return dict(
        cell,
        metric=task.failed_value(data) if value is None else value,
        metrics=metrics,
        final_train_loss=finite(history.history["loss"][-1]),
        wall_time_s=round(time.perf_counter() - start, 2),
    )


def tables_and_jobs(args, cells):
    """One table per task, batch size and seed, and the runs it needs."""
    tables, jobs = [], []
    for name in args.tasks:
        task = TASKS[name]
        budget = task.budget(args.quick)
        _DATA[name] = data = task.load(args.cache_dir, args.quick)
        for b, optimizer in itertools.product(
            args.batch_sizes or budget.batch_sizes, args.optimizers
        ):
            total = budget.epochs * math.ceil(len(data["x"]) / b)
            best, records = find_sources(args, name, b, optimizer)
            for seed, record in records.items():
                if record is None and args.quick:
                    record = synthetic(total)
                if record is None or record["autolr_switch_step"] is None:
                    print(
                        f"No AutoLR switch recorded: {name} B={b} "
                        f"{optimizer} seed {seed}"
                    )
                    continue
                reference = plan(record, None, total, [1])[0]
                reference.update(name="AutoLR run")
                reference["metric"] = suite_plan.metric_value(
                    record, task.metric
                )
                table = dict(task=name, batch_size=b, seed=seed)
                table.update(optimizer=optimizer, total_steps=total)
                keys = ("code", "key", "autolr_reason")
                table["record"] = {k: record.get(k) for k in keys}
                table["record"]["synthetic"] = bool(record.get("synthetic"))
                table.update(grid_best=best, reference=reference)
                table["cells"] = plan(record, best, total, cells, optimizer)
                tables.append(table)
                job = (args.cache_dir, args.quick, name, b, optimizer)
                jobs += [(*job, seed, cell) for cell in table["cells"]]
    return tables, jobs


def write(out, meta, tables):
    """Writes replay.json and replay.md to `out`; returns the markdown."""
    lines = [
        "# Replay: AutoLR's trajectory as fixed schedules",
        "",
        "c: the step of the weight copy the decay starts from; s: the "
        "switch step; lost: s - c, the steps at LR 0 at the end; ramp LR "
        f"at c: AutoLR's ramp there; L: the LR the {meta['decay']} decay "
        "starts from; "
        "minimum: the record's LR at the smoothed loss minimum. `grid "
        "best`: the grid's schedule (linear warmup to L, cosine to 0). "
        "`AutoLR run`: the record's own metric, not trained again.",
        "",
    ]
    for t in tables:
        task, record, best = t["task"], t["record"], t["grid_best"]
        source = f"record of code `{record['code']}`"
        if record["synthetic"]:
            source = "synthetic stand-in (no record)"
        grid = "no grid"
        if best is not None:
            grid = f"peak {best['peak_lr']:g}, warmup "
            grid += f"{best['warmup_fraction']:g}"
            grid += " (stand-in)" if best.get("synthetic") else ""
        lines += [
            f"## {task}, B={t['batch_size']}, {t['optimizer']}, seed "
            f"{t['seed']}: AutoLR {source}",
            "",
            f"{t['total_steps']} steps; grid best: {grid}. Metric: "
            f"{suite_report.metric_unit(task)}.",
            "",
            "| cell | c | s | lost | ramp LR at c | L | L / minimum | metric |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cell in [t["reference"], *t["cells"]]:
            row = [cell["name"], *(_f(cell.get(k), "d") for k in STEPS)]
            row += [_f(cell.get(k), ".3g") for k in LRS]
            row.append(suite_report.show_metric(task, cell["metric"]))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        f"- Command: `{meta['command']}`",
        f"- Started {meta['date']}; wall time {meta['wall_time_s']:.0f} s; "
        f"{meta['workers']} worker(s) x 1 thread; code {meta['code']}; "
        f"Python {meta['python']}, {meta['nproc']} CPUs.",
    ]
    return write_result(out, "replay", dict(meta=meta, tables=tables), lines)


def _f(value, spec):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL, quick=args.quick)
    tables, jobs = tables_and_jobs(args, settings["cells"])
    if not jobs:
        sys.exit("Nothing to replay: no AutoLR record matches.")
    env = environment()  # Its date is the start.
    start = time.perf_counter()
    print(f"{len(jobs)} runs, {args.workers} worker(s).", flush=True)
    if args.workers == 1:
        configure_threads(1)
        runs = [train(job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        workers = min(args.workers, len(jobs))
        with context.Pool(workers, configure_threads, (1,)) as pool:
            runs = pool.map(train, jobs, chunksize=1)
    runs = iter(runs)
    for t in tables:
        t["cells"] = [next(runs) for _ in t["cells"]]
    meta = dict(env, settings=settings, workers=args.workers)
    meta.update(wall_time_s=time.perf_counter() - start)
    meta["decay"] = switch_ceiling.DECAY
    print(write(args.out, meta, tables))


if __name__ == "__main__":
    main()
