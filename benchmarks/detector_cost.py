"""Cost of AutoLR's Gaussian-process minimum check, as the controller runs it.

What is measured, for each warmup length N (default 1,000, 10,000, 100,000
and 1,000,000 recorded losses; the last is the long-run bound):

1. An `AutoLRController` with a budget of `2 * N + 10` steps (warmup cap
   `N + 5`) and `check_every = N + 1` is fed N noisy, decreasing losses
   (`2 - 0.1 * log10(step + 1) + noise`), so that no check runs while it
   fills. `step_us` is the mean wall time of one `ctl.step(loss)` call over
   those N steps: the per-step bookkeeping (binning, the next LR).
2. `MinimumDetector().test(x, means, counts, key=k)` is then timed on
   exactly the arrays the controller would test after those N steps
   (`centers, means, counts = ctl.loss_bins()`, `x = centers / N`), for
   `k = 0 .. R-1`, after one untimed call (reported as `first_ms`). The
   median and p90 of those R calls are `check_ms_median` and `check_ms_p90`.
3. `bins` is how many bins the controller holds (at most `max_bins = 1024`:
   neighbours are merged pairwise beyond), and `state_bytes` is
   `len(json.dumps(ctl.get_state()))`, the size of its whole state.
4. `tfp_check_ms_median` / `tfp_check_ms_p90`: the same test with
   `smoother="tfp"` (`TFPMinimumDetector`: TensorFlow Probability's GP on
   its NumPy substrate, the output scale and noise fitted by L-BFGS-B on
   TFP's marginal likelihood) on the same arrays and keys, over
   `--tfp-repeats` calls after one untimed call (`tfp_first_ms`, which
   includes importing TFP at the first size). `--no-tfp` leaves it out.
5. `step_us_with_checks` repeats step 1 with the default `check_every`
   (about 100 checks over the warmup cap) and the same losses, which never
   pass their minimum, so every check runs (the GP from the first check
   where the loss has clearly fallen: `gp_runs_while_feeding`): the
   amortised per-step cost that training pays with the checks included.

`--import-tensorflow` imports TensorFlow first, as in a training process
(the detector scans the loaded BLAS libraries once per process).

How to read it: `check_ms_median` should stay roughly flat in N (the GP sees
at most 1024 bins, fits on 100 of them and conditions each of its 5
posteriors on 256), and under the 50 ms target at every size. For scale,
the AutoWU reference implementation took 2.4 to 6.1 s per check; that figure
is quoted, not measured by this script.

Usage: `python -m benchmarks.detector_cost [--sizes ...] [--repeats R]
[--out DIR] [--quick]`. Writes `detector_cost.json` and `detector_cost.md`
under `--out` (default `benchmarks/results`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy

from benchmarks.common import RESULTS, environment, write_result
from keras_autolr import AutoLRController, MinimumDetector
from keras_autolr.core.smoothers import make_detector

TARGET_MS = 50.0
REFERENCE_NOTE = (
    "The AutoWU reference implementation (PyTorch) took 2.4-6.1 s of CPU "
    "per check on this project's 2-core machines (not measured by this "
    "script)."
)
DEFAULT_OUT = RESULTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Median milliseconds per GP minimum check of AutoLR, on the loss "
            "bins the controller holds after N warmup steps, plus the "
            "per-step cost of AutoLRController.step()."
        )
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 100_000, 1_000_000],
        help="warmup lengths N (recorded losses) to measure; 1,000,000 is "
        "the long-run bound (default: 1000 10000 100000 1000000)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=21,
        help="timed checks per size, R >= 1 (default: 21)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the loss noise"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for detector_cost.json and .md "
        "(default: benchmarks/results)",
    )
    parser.add_argument(
        "--import-tensorflow",
        action="store_true",
        help="import tensorflow before measuring, as in a Keras process",
    )
    parser.add_argument(
        "--tfp-repeats",
        type=int,
        default=5,
        help="timed checks per size with smoother='tfp' (default: 5)",
    )
    parser.add_argument(
        "--no-tfp",
        action="store_true",
        help="do not time the TensorFlow Probability smoother",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: sizes 1000 and 10000, 5 repeats (2 with TFP)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.tfp_repeats = [1_000, 10_000], 5, 2
    if args.repeats < 1 or min(args.sizes) < 16:
        parser.error("--repeats must be >= 1 and every size >= 16")
    return args


def make_losses(n: int, seed: int) -> list[float]:
    """N noisy losses decreasing like log10 of the step (no minimum)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.float64)
    losses = 2.0 - 0.5 * np.log10(steps + 1.0) / 5.0
    return (losses + 0.05 * rng.normal(size=n)).tolist()


def feed(ctl: AutoLRController, losses: list[float]) -> float:
    """Feeds the losses one step at a time; mean microseconds per step."""
    step = ctl.step
    start = time.perf_counter()
    for loss in losses:
        step(loss)
    return (time.perf_counter() - start) / len(losses) * 1e6


def time_checks(
    ctl: AutoLRController,
    now: int,
    repeats: int,
    detector: MinimumDetector | None = None,
) -> tuple[float, list[float]]:
    """Times the detector (default: `MinimumDetector()`) on the
    controller's bins; (first, others) in ms."""
    centers, means, counts = ctl.loss_bins()
    x = centers / now
    detector = detector or MinimumDetector()

    def one(key: int) -> float:
        start = time.perf_counter()
        detector.test(x, means, counts, key=key)
        return (time.perf_counter() - start) * 1e3

    first = one(repeats)  # Untimed in the statistics: a fresh key.
    return first, [one(k) for k in range(repeats)]


def measure(n: int, repeats: int, seed: int, tfp_repeats: int = 0) -> dict:
    """All numbers of one warmup length N (`tfp_repeats=0`: without the
    TFP smoother)."""
    losses = make_losses(n, seed)
    total = 2 * n + 10
    ctl = AutoLRController(
        total_steps=total, max_warmup_fraction=0.5, check_every=n + 1
    )
    step_us = feed(ctl, losses)
    if ctl.last_probability is not None:
        raise RuntimeError("A check ran while filling the controller.")
    first_ms, times = time_checks(ctl, n, repeats)
    tfp = {}
    if tfp_repeats:
        detector = make_detector("tfp")
        tfp_first, tfp_times = time_checks(ctl, n, tfp_repeats, detector)
        tfp = {
            "tfp_first_ms": tfp_first,
            "tfp_check_ms_median": float(np.median(tfp_times)),
            "tfp_check_ms_p90": float(np.percentile(tfp_times, 90)),
            "tfp_check_ms_all": tfp_times,
            "tfp_repeats": tfp_repeats,
        }
    checked = AutoLRController(total_steps=total, max_warmup_fraction=0.5)
    step_us_with_checks = feed(checked, losses)
    _, _, counts = ctl.loss_bins()
    return {
        "n": n,
        "bins": len(counts),
        # Every loss is finite, so the fullest bin holds a bin's width.
        "bin_width": int(counts.max()),
        "state_bytes": len(json.dumps(ctl.get_state())),
        "step_us": step_us,
        "first_ms": first_ms,
        "check_ms_median": float(np.median(times)),
        "check_ms_p90": float(np.percentile(times, 90)),
        "check_ms_all": times,
        "repeats": repeats,
        "check_every_default": checked.settings.check_every,
        "checks_while_feeding": checked.tests_run,
        "gp_runs_while_feeding": checked.detector_runs,
        "switched_while_feeding": bool(checked.events),
        "step_us_with_checks": step_us_with_checks,
        "target_met": float(np.median(times)) < TARGET_MS,
        **tfp,
    }


def smoother_table(rows: list[dict]) -> str:
    """Cost of one test per smoother, as a Markdown table."""
    lines = [
        "| N losses | numpy median (ms) | numpy p90 (ms) | tfp median (ms) "
        "| tfp p90 (ms) | tfp first (ms) | tfp / numpy |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['check_ms_median']:.2f} "
            f"| {r['check_ms_p90']:.2f} | {r['tfp_check_ms_median']:.1f} "
            f"| {r['tfp_check_ms_p90']:.1f} | {r['tfp_first_ms']:.1f} "
            f"| {r['tfp_check_ms_median'] / r['check_ms_median']:.0f}x |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| N losses | bins | state (KiB) | step (us) | step incl. checks "
        "(us) | check median (ms) | check p90 (ms) | first check (ms) "
        "| < 50 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['bins']} | {r['state_bytes'] / 1024:.1f} "
            f"| {r['step_us']:.1f} | {r['step_us_with_checks']:.1f} "
            f"({r['checks_while_feeding']} checks, "
            f"{r['gp_runs_while_feeding']} with the GP) "
            f"| {r['check_ms_median']:.2f} | {r['check_ms_p90']:.2f} "
            f"| {r['first_ms']:.2f} | {'yes' if r['target_met'] else 'NO'} |"
        )
    return "\n".join(lines)


def markdown(env: dict, rows: list[dict], verdict: str) -> str:
    return "\n".join(
        [
            "# AutoLR detector cost",
            "",
            f"- date: {env['date']}",
            f"- machine: {env['nproc']} CPUs ({env['processor']})",
            f"- python {env['python']}, numpy {env['numpy']}, "
            f"scipy {env['scipy']}",
            f"- command: `{env['command']}`",
            f"- tensorflow loaded: {env['tensorflow_loaded']}",
            f"- repeats per size: {rows[0]['repeats']} (median and p90 over "
            "them; the first, untimed call is shown apart)",
            "",
            table(rows),
            "",
            f"Target: under {TARGET_MS:g} ms per check at every size. "
            f"{verdict}",
            "",
            REFERENCE_NOTE,
            "",
        ]
        + (
            [
                "## Cost of one test per smoother",
                "",
                'The same test with the default `smoother="numpy"` and with '
                '`smoother="tfp"` (TensorFlow Probability '
                f"{env.get('tfp', '?')}, NumPy substrate), on the same bins "
                "and keys; TFP over "
                f"{rows[0]['tfp_repeats']} repeats.",
                "",
                smoother_table(rows),
                "",
            ]
            if "tfp_repeats" in rows[0]
            else []
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.import_tensorflow:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow  # noqa: F401
    env = environment(scipy=scipy.__version__)
    env["tensorflow_loaded"] = "tensorflow" in sys.modules
    tfp_repeats = 0 if args.no_tfp else args.tfp_repeats
    if tfp_repeats:
        from keras_autolr.core.smoothers import tfp_numpy

        env["tfp"] = tfp_numpy().__version__
    rows = [
        measure(n, args.repeats, args.seed, tfp_repeats) for n in args.sizes
    ]
    met = all(r["target_met"] for r in rows)
    verdict = "Met." if met else "NOT met."
    result = {
        "environment": env,
        "target_ms": TARGET_MS,
        "target_met": met,
        "reference_note": REFERENCE_NOTE,
        "results": rows,
    }
    text = markdown(env, rows, verdict)
    print(write_result(args.out, "detector_cost", result, [text], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
