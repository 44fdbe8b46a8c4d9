"""Benchmark: the best decision AutoLR could make, chosen in hindsight.

AutoLR's schedule has one form: its exponential ramp from `min_lr` until a
switch step, then its default decay from a peak LR (at most the LR reached:
a roll back) to 0 at the end of the budget. The detector only chooses the
switch step and the peak. This script trains that form with both fixed, on
a grid of switch steps x peaks, on a suite task (`tasks.py`: its data and
model; AdamP or LAMB with the suite's weight decay), and reports the best
cell by its mean over the seeds: the metric that a perfect detector, one
that knew the outcome of every choice, would reach. Beside it, from the
suite's records of the same task, batch size and budget where there are
any, AutoLR's runs and the grid's best cell: where AutoLR falls short of
the grid and this ceiling does too, the ramp loses, not the detector.

The fixed schedules do not restore weights at the switch (AutoLR does,
after an explosion), so a cell whose ramp has already blown up before its
switch shows that, not what AutoLR would do there.

    python -m benchmarks.switch_ceiling           # MNIST-1D, B=8192, ~10 min
    python -m benchmarks.switch_ceiling --quick   # smoke test, ~1 min

Writes `switch_ceiling.json` and `switch_ceiling.md` to `--out`.
"""

import argparse
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import suite_plan
from benchmarks.common import (
    CACHE,
    RESULTS,
    configure_threads,
    environment,
    finite,
    write_result,
)
from benchmarks.suite_run import make_optimizer
from benchmarks.tasks import TASKS
from keras_autolr.core.options import Settings

TASK = "mnist1d"  # Classification: the cells are ranked by test accuracy.
FULL = {
    "epochs": 20,
    "batch_size": 8192,  # 100 steps: where AutoLR was furthest from a grid.
    "seeds": [0, 1],
    "switch_fractions": [0.25, 0.28, 0.31, 0.34],
    "peaks": [0.025, 0.05, 0.1, 0.2],
}
QUICK = {
    "epochs": 4,
    "batch_size": 2048,
    "seeds": [0],
    "switch_fractions": [0.3],
    "peaks": [1e-3, 3e-3],
}
# AutoLR's defaults, which set its ramp and its decay.
_DEFAULTS = Settings(total_steps=2)
MIN_LR, MAX_LR = _DEFAULTS.min_lr, _DEFAULTS.max_lr
MAX_WARMUP_FRACTION = _DEFAULTS.max_warmup_fraction
DECAY = _DEFAULTS.decay


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test, ~1 minute"
    )
    parser.add_argument(
        "--optimizer", choices=["adamp", "lamb"], default="adamp"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE, help="data cache"
    )
    parser.add_argument(
        "--progress",
        type=Path,
        default=RESULTS / "suite.progress.jsonl",
        help="the suite's records",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def cells(settings, total_steps):
    """(switch step, peak LR) pairs: a peak above the LR reached is no
    roll back, and not a choice AutoLR can make."""
    ramp_steps = int(MAX_WARMUP_FRACTION * total_steps)
    out = []
    for fraction in settings["switch_fractions"]:
        switch = round(fraction * total_steps)
        reached = MIN_LR * (MAX_LR / MIN_LR) ** ((switch - 1) / ramp_steps)
        out += [(switch, p) for p in settings["peaks"] if p <= reached]
    return out


def make_schedule(switch, peak, total_steps, end=None):
    """AutoLR's own formula (`keras_autolr.core.schedule.autolr`), fixed: the
    ramp of a `total_steps` budget, the decay to 0 at step `end` (by
    default `total_steps`)."""
    import keras

    from keras_autolr.core import schedule

    class Fixed(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return schedule.autolr(
                keras.ops.cast(step, "float32"),
                switch_step=float(switch),
                peak_lr=peak,
                warmup=_DEFAULTS.warmup,
                decay_kind=DECAY,
                min_lr=MIN_LR,
                max_lr=MAX_LR,
                ramp_steps=float(int(MAX_WARMUP_FRACTION * total_steps)),
                total_steps=float(total_steps if end is None else end),
                cooldown_steps=0.0,
                xp=keras.ops,
            )

    return Fixed()


_DATA = {}


def _init(cache_dir, quick):
    configure_threads(1)
    _DATA["data"] = TASKS[TASK].load(cache_dir, quick)


def train(job):
    """One run of a fixed cell; returns its record."""
    import keras

    optimizer_name, batch_size, epochs, seed, switch, peak = job
    task, data = TASKS[TASK], _DATA["data"]
    total_steps = epochs * math.ceil(len(data["x"]) / batch_size)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = task.build(data)
    model.compile(
        optimizer=make_optimizer(
            optimizer_name, make_schedule(switch, peak, total_steps)
        ),
        loss=task.loss(),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        data["x"],
        data["y"],
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
    )
    record = dict(
        seed=seed,
        switch_step=switch,
        peak_lr=peak,
        total_steps=total_steps,
        final_train_loss=finite(history.history["loss"][-1]),
        wall_time_s=round(time.perf_counter() - start, 2),
    )
    record.update(task.evaluate(model, data))
    return record


def suite_reference(progress, optimizer, batch_size, total_steps):
    """The suite's records of `TASK` at this batch size and budget: the test
    accuracies of AutoLR's default runs by seed and the grid's best cell
    with its mean, or None where the suite has none."""
    ns = argparse.Namespace(quick=False, tasks=[TASK], seeds=None)
    settings = suite_plan.resolve_settings(ns)
    fps = {TASK: suite_plan.fingerprint(settings, TASK)}
    done = suite_plan.load_progress(progress, fps)
    autolr = {
        r["seed"]: r["test_accuracy"]
        for r in done.values()
        if r["method"] == f"autolr_{optimizer}"
        and r["batch_size"] == batch_size
        and r["total_steps"] == total_steps
        and not r.get("autolr_options")
    }
    if not autolr:
        return None
    method = f"grid_{optimizer}"
    cell = suite_plan.best_cell(settings, TASK, method, batch_size, done)
    grid = None
    if cell is not None:
        keys = [
            suite_plan.run_key(
                suite_plan.make_spec(TASK, method, batch_size, seed, *cell)
            )
            for seed in settings["seeds"]
        ]
        accs = [done[k]["test_accuracy"] for k in keys if k in done]
        grid = dict(peak_lr=cell[0], warmup_fraction=cell[1], accuracies=accs)
    return dict(autolr=autolr, grid=grid)


def summarize(runs):
    """Mean test accuracy of each cell over the seeds, best first."""
    by_cell = {}
    for r in runs:
        by_cell.setdefault((r["switch_step"], r["peak_lr"]), []).append(r)
    rows = []
    for (switch, peak), records in by_cell.items():
        accuracies = [r["test_accuracy"] for r in records]
        rows.append(
            dict(
                switch_step=switch,
                peak_lr=peak,
                mean_accuracy=float(np.mean(accuracies)),
                accuracies=accuracies,
            )
        )
    return sorted(rows, key=lambda row: -row["mean_accuracy"])


def write(out, meta, settings, runs, rows, reference=None):
    seeds = settings["seeds"]
    lines = [
        "# Switch ceiling: AutoLR's schedule with its decision chosen in "
        "hindsight",
        "",
        f"{TASK}, {meta['optimizer']}, B={settings['batch_size']}, "
        f"{settings['epochs']} epochs ({settings['total_steps']} steps), "
        f"seeds {seeds}. Ramp from {MIN_LR} (AutoLR's defaults) to the "
        f"switch step, then {DECAY} decay from the peak to 0; no weights "
        "restored. Test accuracy (%), best cell first.",
        "",
        "| switch step | LR reached | peak LR | mean | per seed |",
        "|---:|---:|---:|---:|:---|",
    ]
    ramp_steps = int(MAX_WARMUP_FRACTION * settings["total_steps"])
    for row in rows:
        reached = MIN_LR * (MAX_LR / MIN_LR) ** (
            (row["switch_step"] - 1) / ramp_steps
        )
        per_seed = ", ".join(f"{100 * a:.2f}" for a in row["accuracies"])
        lines.append(
            f"| {row['switch_step']} | {reached:.3g} | {row['peak_lr']:g} | "
            f"{100 * row['mean_accuracy']:.2f} | {per_seed} |"
        )
    lines += ["", *_reference_lines(reference)]
    lines += [
        "",
        f"- Command: `{meta['command']}`",
        f"- Started {meta['date']}; wall time {meta['wall_time_s']:.0f} s; "
        f"{meta['workers']} worker(s) x 1 thread; code {meta['code']}; "
        f"Python {meta['python']}, {meta['nproc']} CPUs.",
    ]
    payload = dict(
        meta=meta, settings=settings, cells=rows, suite=reference, runs=runs
    )
    return write_result(out, "switch_ceiling", payload, lines)


def _reference_lines(reference):
    if reference is None:
        return [
            "The suite has no record of this task at this batch size and "
            "budget."
        ]

    def show(accs):
        return f"{100 * np.mean(accs):.2f}"

    autolr = reference["autolr"]
    text = (
        f"The suite at this batch size and budget: AutoLR "
        f"{show(list(autolr.values()))} (seeds {sorted(autolr)})"
    )
    grid = reference["grid"]
    if grid:
        text += (
            f", the grid's best cell (peak {grid['peak_lr']:g}, warmup "
            f"{grid['warmup_fraction']:g}) {show(grid['accuracies'])}"
        )
    return [text + "."]


def main(argv=None):
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    # Loaded here first: generated once, before any worker needs it.
    train_size = len(TASKS[TASK].load(args.cache_dir, args.quick)["x"])
    steps_per_epoch = math.ceil(train_size / settings["batch_size"])
    total_steps = settings["epochs"] * steps_per_epoch
    settings["total_steps"] = total_steps
    grid = cells(settings, total_steps)
    if not grid:
        sys.exit("No cell has a peak at or below the LR its ramp reaches.")
    jobs = [
        (args.optimizer, settings["batch_size"], settings["epochs"], s, k, p)
        for k, p in grid
        for s in settings["seeds"]
    ]
    env = environment()  # Its date is the start.
    start = time.perf_counter()
    print(f"{len(jobs)} runs, {args.workers} worker(s).", flush=True)
    if args.workers == 1:
        _init(args.cache_dir, args.quick)
        runs = [train(job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(
            min(args.workers, len(jobs)), _init, (args.cache_dir, args.quick)
        ) as pool:
            runs = pool.map(train, jobs, chunksize=1)
    rows = summarize(runs)
    meta = dict(
        env,
        optimizer=args.optimizer,
        wall_time_s=time.perf_counter() - start,
        workers=args.workers,
    )
    reference = suite_reference(
        args.progress, args.optimizer, settings["batch_size"], total_steps
    )
    print(write(args.out, meta, settings, runs, rows, reference))


if __name__ == "__main__":
    main()
