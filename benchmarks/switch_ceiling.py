"""Benchmark: the best decision AutoLR could make, chosen in hindsight.

AutoLR's schedule has one form: its exponential ramp from `min_lr` until a
switch step, then its default decay from a peak LR (at most the LR reached: a
roll back) to 0 at the end of the budget. The detector only chooses the switch
step and the peak. This script trains that form with both fixed, on a grid of
switch steps x peaks, on the setup of `quality.py` (same data, model,
optimizer, weight decay, budget and seeds), and reports the best cell by its
mean over the seeds: the accuracy that a perfect detector, one that knew the
outcome of every choice, would reach. Where AutoLR falls short of the tuned
grid of `quality.py` and this ceiling falls short too, the detector is not what
loses: the ramp is.

The fixed schedules do not restore weights at the switch (AutoLR does,
after an explosion), so a cell whose ramp has already blown up before its
switch shows that, not what AutoLR would do there.

    python benchmarks/switch_ceiling.py           # B=8192 AdamP, ~10 min
    python benchmarks/switch_ceiling.py --quick   # smoke test, ~1 min

Writes `switch_ceiling.json` and `switch_ceiling.md` to `--out`.
"""

import argparse
import json
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from keras_autolr.settings import Settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402  (the benchmark whose setup this one shares)
from provenance import environment  # noqa: E402

FULL = {
    "epochs": 20,
    "batch_size": 8192,
    "seeds": [0, 1],
    "train_size": 40_000,
    "test_size": 10_000,
    "switch_fractions": [0.25, 0.28, 0.31, 0.34],
    "peaks": [0.025, 0.05, 0.1, 0.2],
}
QUICK = {
    "epochs": 4,
    "batch_size": 2048,
    "seeds": [0],
    "train_size": 8_000,
    "test_size": 2_000,
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
        "--cache-dir", type=Path, default=HERE / ".cache", help="data cache"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
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
    """AutoLR's own formula (`keras_autolr.schedules.autolr`), fixed: the
    ramp of a `total_steps` budget, the decay to 0 at step `end` (by
    default `total_steps`)."""
    import keras

    from keras_autolr import schedules

    class Fixed(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return schedules.autolr(
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


def _init(data_args):
    quality.configure_threads(1)
    _DATA["data"] = quality.load_data(*data_args)


def train(job):
    """One run of a fixed cell; returns its record."""
    import keras

    optimizer_name, batch_size, epochs, seed, switch, peak = job
    (x, y), (x_test, y_test) = _DATA["data"]
    total_steps = epochs * math.ceil(len(x) / batch_size)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = quality.build_model(x.shape[1])
    model.compile(
        optimizer=quality.make_optimizer(
            optimizer_name, make_schedule(switch, peak, total_steps)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0
    )
    record = dict(
        seed=seed,
        switch_step=switch,
        peak_lr=peak,
        total_steps=total_steps,
        final_train_loss=quality._finite(history.history["loss"][-1]),
        wall_time_s=round(time.perf_counter() - start, 2),
    )
    record.update(quality._evaluate(model, x_test, y_test))
    return record


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


def write(out, meta, settings, runs, rows):
    out.mkdir(parents=True, exist_ok=True)
    result = dict(meta=meta, settings=settings, cells=rows, runs=runs)
    (out / "switch_ceiling.json").write_text(json.dumps(result, indent=1))
    seeds = settings["seeds"]
    lines = [
        "# Switch ceiling: AutoLR's schedule with its decision chosen in "
        "hindsight",
        "",
        f"{meta['optimizer']}, B={settings['batch_size']}, "
        f"{settings['epochs']} epochs ({settings['total_steps']} steps), "
        f"seeds {seeds}; the setup of `quality.py`. Ramp from {MIN_LR} "
        f"(AutoLR's defaults) to the switch step, then {DECAY} decay "
        "from the peak to 0; no weights restored. Test accuracy (%), best cell "
        "first.",
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
    lines += [
        "",
        f"- Command: `{meta['command']}`",
        f"- Started {meta['date']}; wall time {meta['wall_time_s']:.0f} s; "
        f"{meta['workers']} worker(s) x 1 thread; code {meta['code']}; "
        f"Python {meta['python']}, {meta['nproc']} CPUs.",
    ]
    (out / "switch_ceiling.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    steps_per_epoch = math.ceil(settings["train_size"] / settings["batch_size"])
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
    data_args = (args.cache_dir, settings["train_size"], settings["test_size"])
    data_args += (42,)
    env = environment()  # Its date is the start.
    start = time.perf_counter()
    print(f"{len(jobs)} runs, {args.workers} worker(s).", flush=True)
    if args.workers == 1:
        _init(data_args)
        runs = [train(job) for job in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(
            min(args.workers, len(jobs)), _init, (data_args,)
        ) as pool:
            runs = pool.map(train, jobs, chunksize=1)
    rows = summarize(runs)
    meta = dict(
        env,
        optimizer=args.optimizer,
        wall_time_s=time.perf_counter() - start,
        workers=args.workers,
        code=quality.code_version(),
    )
    print(write(args.out, meta, settings, runs, rows))


if __name__ == "__main__":
    main()
