"""Wall-time overhead of the AutoLR callback on `model.fit`, on this CPU.

What is measured: the wall time of `model.fit(..., callbacks=[AutoLR(...)])`
divided by that of the same `model.fit` with a constant learning rate and no
callback. Both fit the same small CNN (two Conv2D layers, 5 to 10 ms per
step on a 2-core CPU) from the same seed on the same synthetic data (4,096
16x16x3 images of 10 noisy class templates, batch 64, 64 steps per epoch),
`verbose=0`. `--quick` uses 2,048 images, 2 epochs and 2 pairs.

- Baseline: `Adam(1e-3)`, no callback.
- Reader: `Adam(1e-3)` and a callback that only reads the logged loss
  after every batch, which makes the host wait for every chunk: the floor
  of any callback that reads each step's loss from the logs. AutoLR reads
  the losses its train step recorded only at its tests, the warmup cap
  and epoch ends.
- AutoLR: `Adam()` and `AutoLR(epochs=E, verbose=0)`.

Each configuration is fitted once, untimed, before any timing (TensorFlow
start-up and the first tracing). Every timed run then builds and compiles a
fresh model outside the clock and times only the `fit` call, so every timed
fit includes tracing of its own train step (and its XLA compile, where
Keras's `jit_compile="auto"` picks XLA; recorded as `jit_compile`), for both
runs. Runs are interleaved (baseline, reader, AutoLR, baseline, ...),
`--pairs` such triples at each `steps_per_execution` (1 and 32).

Reported per `steps_per_execution`: each pair's ratio, the median ratio,
and the median absolute times. `ratio_after_first_epoch` is the same ratio
of the time from the end of epoch 1 to the end of `fit`: it leaves out the
tracing and compiling, and also AutoLR's work in the first epoch. It comes
from a callback with epoch hooks only, attached to both runs; a callback
without batch hooks does not change how Keras dispatches batch callbacks.
For AutoLR runs the number of tests, of the tests that ran the GP (a few
ms each on a quiet machine, on the worker thread; the others stop after
the cheap statistics of the losses), and the switch are recorded.

`CPU-time ratio` is the same ratio of the process's CPU time (all threads,
`time.process_time`): time spent waiting for a core that another process
holds does not count in it, so it is less noisy on a shared machine than
the wall-time ratio that the targets are about.

`AutoLR hooks / fit` is the time spent inside AutoLR's own callback hooks
(everything it does on the training thread: the reads of the recorded
losses, which wait for the device, bookkeeping, weight copies, handing
tests to its worker thread), over its fit time, timed inside each run; it
does not include any slowdown of the training itself, but it is far less
noisy than a ratio of two wall times on a shared machine.
`AutoLR tests / fit` is the CPU time of the minimum tests (statistics and
GP, `keras_autolr.core.warmup.minimum_test`) on AutoLR's worker thread,
over the fit time: work that overlaps training,
and costs wall time only where it competes for a core.

The train step records the loss of every step, and AutoLR reads the
losses only where a decision needs them: at each test point (every 3
steps at `steps_per_execution=1`, at the end of every chunk at 32; the
ramp is 256 steps), and at the end of each epoch. The timing is what this
script measures, not the schedule's quality.

How to read it: a ratio of 1.03 means fit took 3 % longer with AutoLR.
Targets: <= 1.03 at `steps_per_execution=1`, <= 1.01 at 32. Timings on a
shared machine are noisy; look at the spread of the per-pair ratios.

Most of AutoLR's host work is per test, and the tests are about 100 per
run whatever its length; a 640-step fit is where they weigh most.
`benchmarks/README.md` therefore also reports a fit five times longer
(`--epochs 50 --name overhead_long`), in which the same tests are spread
over 3,200 steps.

`--model large` fits a CNN with about 50 times the parameters (692,170
against 13,098: wider convolutions and a hidden dense layer), whose steps
take longer while AutoLR's host work per step stays the same; its results
are reported as `overhead_large`. Goals for AutoLR's own share of the
training thread (hooks / fit) on the small model: <= 2 % at
`steps_per_execution=1`, <= 1 % at 32.

Usage: `python -m benchmarks.overhead [--pairs 7] [--epochs 10] [--quick]
[--model small|large] [--out DIR] [--name STEM]`. Writes `STEM.json` and
`STEM.md` under `--out` (default `benchmarks/results`, stem `overhead`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, environment, write_result  # noqa: E402
from keras_autolr import AutoLR  # noqa: E402
from keras_autolr.core import warmup  # noqa: E402

TARGETS = {1: 1.03, 32: 1.01}
# Goals for AutoLR's own share of the training thread (hooks / fit) on the
# small model.
HOOK_TARGETS = {1: 0.02, 32: 0.01}
# The models: the small CNN, and one with about 50 times its parameters
# (wider convolutions and a hidden dense layer), whose steps take longer
# while AutoLR's host work per step stays the same.
MODELS = {"small": (16, 32, None), "large": (64, 128, 192)}
SAMPLES = 4096
BATCH = 64
IMAGE = (16, 16, 3)
CLASSES = 10
DEFAULT_OUT = RESULTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Ratio of model.fit wall time with the AutoLR callback to "
            "model.fit with a constant LR and no callback, interleaved "
            "pairs at steps_per_execution 1 and 32."
        )
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=7,
        help="timed (baseline, reader, AutoLR) triples per "
        "steps_per_execution, >= 1 "
        "(default: 7)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="epochs of every fit, and the AutoLR budget, >= 2 (default: 10)",
    )
    parser.add_argument(
        "--spe",
        type=int,
        nargs="+",
        default=[1, 32],
        help="steps_per_execution values, each dividing 64 (default: 1 32)",
    )
    parser.add_argument(
        "--check-every",
        default=None,
        help="AutoLR(check_every=...): an integer or 'epoch' "
        "(default: AutoLR's own default)",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="small",
        help="the small CNN, or one with about 50x its parameters "
        "(default: small)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of data and weights"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for overhead.json and .md "
        "(default: benchmarks/results)",
    )
    parser.add_argument(
        "--name",
        default="overhead",
        help="stem of the output files, e.g. overhead_long for a run with "
        "more epochs next to the default one (default: overhead)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 2 pairs of 2 epochs on {SAMPLES // 2} samples",
    )
    args = parser.parse_args(argv)
    args.samples = SAMPLES
    if args.quick:
        args.pairs, args.epochs, args.samples = 2, 2, SAMPLES // 2
    steps = args.samples // BATCH
    if args.pairs < 1 or args.epochs < 2:
        parser.error("--pairs must be >= 1 and --epochs >= 2")
    if any(s < 1 or steps % s for s in args.spe):
        parser.error(f"every --spe must divide the {steps} steps per epoch")
    if args.check_every not in (None, "epoch"):
        args.check_every = int(args.check_every)
    return args


def make_data(seed: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of 10 random class templates: learnable, fixed seed."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(CLASSES, *IMAGE))
    y = rng.integers(0, CLASSES, size=samples)
    x = 0.5 * templates[y] + rng.normal(size=(samples, *IMAGE))
    return x.astype("float32"), y.astype("int32")


def build_model(
    seed: int, autolr: bool, spe: int, size: str = "small"
) -> keras.Model:
    """A fresh, compiled CNN of `MODELS[size]`; weights depend on `seed`
    only."""
    keras.utils.set_random_seed(seed)
    first, second, hidden = MODELS[size]
    dense = [keras.layers.Dense(hidden, activation="relu")] if hidden else []
    model = keras.Sequential(
        [
            keras.Input(IMAGE),
            keras.layers.Conv2D(first, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(second, 3, activation="relu"),
            keras.layers.Flatten(),
            *dense,
            keras.layers.Dense(CLASSES),
        ]
    )
    optimizer = (
        keras.optimizers.Adam() if autolr else keras.optimizers.Adam(1e-3)
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=spe,
    )
    return model


class LossReader(keras.callbacks.Callback):
    """Reads the logged loss after every batch, with nothing else added.

    The host then waits for every chunk's loss on the training thread: the
    floor of any callback that reads each step's loss from the logs.
    """

    def on_train_batch_end(self, batch, logs=None):
        self.last = float(logs["loss"])


class TestClock:
    """Adds up the CPU time of AutoLR's tests on its worker thread."""

    seconds = 0.0

    @classmethod
    def install(cls) -> None:
        # Before any controller exists: each looks the test up when built.
        warmup.minimum_test = cls._timed(warmup.minimum_test)

    @classmethod
    def _timed(cls, fn):
        def timed(*args):
            start = time.thread_time()
            try:
                return fn(*args)
            finally:
                cls.seconds += time.thread_time() - start

        return timed


class TimedAutoLR(AutoLR):
    """AutoLR that adds up the time spent in its own hooks.

    Everything AutoLR does on the host runs in these hooks, on the training
    thread, so their total is its own cost, measured inside each run: far
    less noisy than the difference of two wall times. It includes its
    reads of the recorded losses, and their wait for the device.
    """

    hook_seconds = 0.0

    def _timed(self, hook, *args):
        start = time.perf_counter()
        try:
            return hook(*args)
        finally:
            self.hook_seconds += time.perf_counter() - start

    def on_train_begin(self, logs=None):
        self._timed(super().on_train_begin, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._timed(super().on_epoch_begin, epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._timed(super().on_train_batch_end, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._timed(super().on_epoch_end, epoch, logs)

    def on_train_end(self, logs=None):
        self._timed(super().on_train_end, logs)


class EpochClock(keras.callbacks.Callback):
    """Records when each epoch ends (epoch hooks only: no batch hooks)."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def run_once(data, spe: int, kind: str, args) -> dict:
    """One fit of a fresh model; only the `fit` call is timed.

    `kind`: "baseline" (no callback), "reader" (`LossReader`) or "autolr".
    """
    keras.backend.clear_session()
    gc.collect()
    x, y = data
    autolr = kind == "autolr"
    model = build_model(args.seed, autolr, spe, args.model)
    clock = EpochClock()
    callbacks = [clock]
    if kind == "reader":
        callbacks.append(LossReader())
    if autolr:
        callbacks.append(
            TimedAutoLR(
                epochs=args.epochs, verbose=0, check_every=args.check_every
            )
        )
    start, start_cpu = time.perf_counter(), time.process_time()
    tests_before = TestClock.seconds
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=args.epochs,
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
    )
    end, end_cpu = time.perf_counter(), time.process_time()
    result = {
        "seconds": end - start,
        "cpu_seconds": end_cpu - start_cpu,
        "seconds_after_first_epoch": end - clock.ends[0],
        "final_loss": float(history.history["loss"][-1]),
        "jit_compile": bool(model.jit_compile),
        "num_params": model.count_params(),
    }
    if autolr:
        result.update(autolr_summary(callbacks[-1].controller))
        result["hook_seconds"] = callbacks[-1].hook_seconds
        result["test_cpu_seconds"] = TestClock.seconds - tests_before
    return result


def autolr_summary(ctl) -> dict:
    """How much work AutoLR did, and what it decided."""
    event = ctl.switch_event
    return {
        "checks": ctl.tests_run,
        "detector_runs": ctl.detector_runs,
        "check_every": ctl.settings.check_every,
        "switch_step": ctl.switch_step,
        "switch_reason": event["reason"] if event else None,
        "peak_lr": ctl.landing_lr,  # The record's key: the landing LR.
    }


def bench_spe(data, spe: int, args) -> dict:
    """Interleaved (baseline, reader, AutoLR) runs at one spe."""
    pairs = []
    for i in range(args.pairs):
        base = run_once(data, spe, "baseline", args)
        reader = run_once(data, spe, "reader", args)
        auto = run_once(data, spe, "autolr", args)
        pair = {
            "baseline": base,
            "reader": reader,
            "autolr": auto,
            "ratio": auto["seconds"] / base["seconds"],
            "cpu_ratio": auto["cpu_seconds"] / base["cpu_seconds"],
            "ratio_after_first_epoch": auto["seconds_after_first_epoch"]
            / base["seconds_after_first_epoch"],
            "reader_ratio": reader["seconds"] / base["seconds"],
            "ratio_to_reader": auto["seconds"] / reader["seconds"],
        }
        print(
            f"spe {spe:>2} pair {i + 1}/{args.pairs}: baseline "
            f"{base['seconds']:.2f} s, reader {reader['seconds']:.2f} s, "
            f"AutoLR {auto['seconds']:.2f} s ({auto['checks']} tests, "
            f"{auto['detector_runs']} GP runs), "
            f"ratio {pair['ratio']:.3f}",
            flush=True,
        )
        pairs.append(pair)
    return summarize(spe, pairs)


def summarize(spe: int, pairs: list[dict]) -> dict:
    def median(values):
        return float(np.median(values))

    ratio = median([p["ratio"] for p in pairs])
    target = TARGETS.get(spe)
    hooks = median(
        [p["autolr"]["hook_seconds"] / p["autolr"]["seconds"] for p in pairs]
    )
    hook_target = HOOK_TARGETS.get(spe)
    return {
        "steps_per_execution": spe,
        "pairs": pairs,
        "ratios": [p["ratio"] for p in pairs],
        "median_ratio": ratio,
        "median_ratio_after_first_epoch": median(
            [p["ratio_after_first_epoch"] for p in pairs]
        ),
        "median_reader_ratio": median([p["reader_ratio"] for p in pairs]),
        "median_cpu_ratio": median([p["cpu_ratio"] for p in pairs]),
        # AutoLR's own host time as a fraction of its fit: 1 + this is the
        # ratio it would have if nothing else differed.
        "median_hook_fraction": hooks,
        "median_test_fraction": median(
            [
                p["autolr"]["test_cpu_seconds"] / p["autolr"]["seconds"]
                for p in pairs
            ]
        ),
        "median_ratio_to_reader": median([p["ratio_to_reader"] for p in pairs]),
        "median_baseline_s": median([p["baseline"]["seconds"] for p in pairs]),
        "median_autolr_s": median([p["autolr"]["seconds"] for p in pairs]),
        "median_checks": median([p["autolr"]["checks"] for p in pairs]),
        "median_detector_runs": median(
            [p["autolr"]["detector_runs"] for p in pairs]
        ),
        "target": target,
        "target_met": None if target is None else ratio <= target,
        "hook_target": hook_target,
        "hook_target_met": None
        if hook_target is None
        else hooks <= hook_target,
    }


def table(rows: list[dict]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| spe | median baseline (s) | median AutoLR (s) | median ratio "
        "| ratio after epoch 1 | per-pair ratios | CPU-time ratio "
        "| reader / baseline "
        "| AutoLR / reader | AutoLR hooks / fit | AutoLR tests / fit "
        "| AutoLR tests (GP runs) | target | met | hooks goal | met |",
        "|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:"
        "|:---:|---:|:---:|",
    ]
    for r in rows:
        ratios = ", ".join(f"{v:.3f}" for v in r["ratios"])
        target = "-" if r["target"] is None else f"<= {r['target']:.2f}"
        met = {None: "-", True: "yes", False: "NO"}[r["target_met"]]
        hook_target = r["hook_target"]
        hook_goal = "-" if hook_target is None else f"<= {hook_target:.2f}"
        hook_met = {None: "-", True: "yes", False: "NO"}[r["hook_target_met"]]
        lines.append(
            f"| {r['steps_per_execution']} | {r['median_baseline_s']:.2f} "
            f"| {r['median_autolr_s']:.2f} | {r['median_ratio']:.3f} "
            f"| {r['median_ratio_after_first_epoch']:.3f} | {ratios} "
            f"| {r['median_cpu_ratio']:.3f} "
            f"| {r['median_reader_ratio']:.3f} "
            f"| {r['median_ratio_to_reader']:.3f} "
            f"| {r['median_hook_fraction']:.3f} "
            f"| {r['median_test_fraction']:.3f} "
            f"| {r['median_checks']:g} ({r['median_detector_runs']:g}) "
            f"| {target} | {met} | {hook_goal} | {hook_met} |"
        )
    return "\n".join(lines)


def markdown(env: dict, rows: list[dict], args) -> str:
    return "\n".join(
        [
            "# AutoLR callback overhead on model.fit",
            "",
            f"- date: {env['date']}",
            f"- machine: {env['nproc']} CPUs ({env['processor']})",
            f"- python {env['python']}, numpy {env['numpy']}, tensorflow "
            f"{env['tensorflow']}, keras {env['keras']} ({env['backend']})",
            f"- command: `{env['command']}`",
            f"- model: {args.model} "
            f"({rows[0]['pairs'][0]['baseline']['num_params']:,} parameters)",
            f"- {args.pairs} interleaved (baseline, reader, AutoLR) triples "
            f"per spe, {args.epochs} epochs "
            f"of {args.samples // BATCH} steps (batch {BATCH}), fresh model "
            "per run, only `fit` timed (tracing included), jit_compile="
            f"{rows[0]['pairs'][0]['baseline']['jit_compile']}",
            "",
            table(rows),
            "",
            "Ratio = AutoLR fit time / baseline fit time (median over pairs)."
            " Targets: <= 1.03 at spe 1, <= 1.01 at spe 32; AutoLR hooks /"
            " fit: <= 0.02 at spe 1, <= 0.01 at spe 32. CPU-time ratio:"
            " the same ratio of the process's CPU time (all threads), which"
            " time spent waiting for a shared core does not inflate. Reader: a "
            "callback that only reads the logged loss after every batch (the "
            "host then waits for every chunk), the floor of any callback "
            "reading each step's loss from the logs; AutoLR reads its "
            "record of the losses only at its tests and epoch ends, and "
            "AutoLR / reader compares it with that floor. "
            "AutoLR hooks / fit: the time spent inside AutoLR's own hooks "
            "(its work on the training thread), over its fit time, timed "
            "within each run: the least noisy of these figures. AutoLR "
            "tests / fit: the CPU time of its tests on its worker thread, "
            "over its fit time (it overlaps training).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    TestClock.install()
    env = environment()
    data = make_data(args.seed, args.samples)
    warmup = {}
    for spe in args.spe:
        for kind in ("baseline", "reader", "autolr"):
            warmup[f"spe{spe}_{kind}"] = run_once(data, spe, kind, args)[
                "seconds"
            ]
    rows = [bench_spe(data, spe, args) for spe in args.spe]
    result = {
        "environment": env,
        "settings": {
            "pairs": args.pairs,
            "epochs": args.epochs,
            "samples": args.samples,
            "batch_size": BATCH,
            "steps_per_epoch": args.samples // BATCH,
            "check_every": args.check_every,
            "seed": args.seed,
            "model": args.model,
            "quick": args.quick,
        },
        "warmup_seconds": warmup,
        "targets": {str(k): v for k, v in TARGETS.items()},
        "hook_targets": {str(k): v for k, v in HOOK_TARGETS.items()},
        "results": rows,
    }
    text = markdown(env, rows, args)
    print(write_result(args.out, args.name, result, [text], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
