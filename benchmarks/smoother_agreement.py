"""Do the NumPy and the TensorFlow Probability smoothers decide alike?

For every loss stream and both settings (the package's defaults, and the
AutoWU reference's, `AutoLRController.reference`), this script reports:

- the tests compared: at every test point of the stream (up to its end, or
  the switch of the NumPy run), `keras_autolr.core.warmup.minimum_test`
  runs with each
  smoother on the same bins with the same subsampling key; `agree` counts
  the tests on which their votes are equal, and `max_dp` is the largest
  difference of a posterior's past-minimum probability between the two;
- the switch step (and reason) of a whole controller run with each
  smoother: closed loop on the synthetic streams (the loss is a function of
  the LR the controller returns), open loop on the recorded ones (the
  recorded losses are replayed whatever the LR);
- for each disagreeing vote, both smoothers' probabilities and fitted
  hyperparameters, which say why.

Streams:

- synthetic: loss `1 + 0.3 log10(lr / best)^2` plus Gaussian noise for
  several `best` LRs and seeds, a loss that only falls, the same U with a
  few single-batch spikes, and a U that explodes back to its start level;
- recorded: the per-step training losses of warmup of short real runs of
  the suite's MNIST-1D model (`tasks.py`) with `AutoLR` defaults, recorded
  by this script (the suite keeps per-epoch losses only).

Usage: `python -m benchmarks.smoother_agreement [--quick] [--out DIR]`.
Writes `smoother_agreement.json` and `smoother_agreement.md` under `--out`
(default `benchmarks/results`). `--quick`: fewer streams and one small
recorded run (about a minute).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy

from benchmarks.common import CACHE, RESULTS, environment, write_result
from keras_autolr import AutoLRController, MinimumDetector
from keras_autolr.core import warmup

SETTINGS = ("default", "reference")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE, help="MNIST-1D cache"
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------
# Streams.


def synthetic_streams(quick):
    """(name, loss_of(lr, step), total_steps, steps_per_epoch)."""
    total, spe = 2000, 50
    rng = np.random.default_rng(0)
    noise = {s: rng.normal(size=total) for s in range(6)}
    cases = [(1e-2, 0), (3e-3, 1), (3e-2, 2), (1e-3, 3), (1e-2, 4)]
    if quick:
        cases = cases[:2]
    out = []
    for best, seed in cases:
        out.append(
            (
                f"U, minimum at LR {best:g}, seed {seed}",
                _u(best, noise[seed]),
                total,
                spe,
            )
        )
    out.append(("falling only", _falling(noise[5]), total, spe))
    spikes = set(np.random.default_rng(1).choice(900, 8, replace=False))
    out.append(("U with spikes", _spiky(noise[0], spikes), total, spe))
    if not quick:
        out.append(("U, then explosion", _exploding(noise[1]), total, spe))
    return out


def _u(best, noise):
    def loss(lr, step):
        return 1.0 + 0.3 * math.log10(lr / best) ** 2 + 0.05 * noise[step]

    return loss


def _falling(noise):
    def loss(lr, step):
        return 2.0 - 1.5 / (1.0 + (3.0 / lr) ** 0.5) + 0.01 * noise[step]

    return loss


def _spiky(noise, spikes):
    base = _u(1e-2, noise)

    def loss(lr, step):
        return base(lr, step) + (2.0 if step in spikes else 0.0)

    return loss


def _exploding(noise):
    base = _u(3e-3, noise)

    def loss(lr, step):
        # Past LR 0.03 the network dies: back at its start level.
        return 2.3 + 0.05 * noise[step] if lr > 0.03 else base(lr, step)

    return loss


def recorded_streams(args):
    """Warmup losses of real runs of the suite's MNIST-1D model:
    (name, per-step losses, total_steps, steps_per_epoch, run facts)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from benchmarks.suite_run import make_optimizer
    from benchmarks.tasks import build_mnist1d, load_mnist1d
    from keras_autolr import AutoLR

    class Recorder(keras.callbacks.Callback):
        """Per-step losses, from Keras's running mean of the epoch."""

        def __init__(self):
            super().__init__()
            self.losses = []

        def on_epoch_begin(self, epoch, logs=None):
            self._total = 0.0

        def on_train_batch_end(self, batch, logs=None):
            total = float(logs["loss"]) * (batch + 1)
            self.losses.append(total - self._total)
            self._total = total

    if args.quick:
        runs = [("adamp", 2048, 0, 10, 8_000)]
    else:
        runs = [
            ("adamp", 2048, 0, 20, 40_000),
            ("adamp", 2048, 1, 20, 40_000),
            ("lamb", 2048, 0, 20, 40_000),
            ("adamp", 256, 0, 8, 40_000),
        ]
    out = []
    for optimizer, batch, seed, epochs, train in runs:
        data = load_mnist1d(args.cache_dir, train, 2_000)
        x, y = data["x"], data["y"]
        keras.utils.set_random_seed(seed)
        model = build_mnist1d(data)
        model.compile(
            optimizer=make_optimizer(optimizer, 1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        autolr, recorder = AutoLR(epochs=epochs, verbose=0), Recorder()
        start = time.perf_counter()
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=epochs,
            callbacks=[autolr, recorder],
            verbose=0,
        )
        ctl = autolr.controller
        event = ctl.switch_event
        losses = np.asarray(recorder.losses[: ctl.switch_step])
        spe = math.ceil(train / batch)
        facts = {
            "optimizer": optimizer,
            "batch_size": batch,
            "seed": seed,
            "epochs": epochs,
            "train_size": train,
            "run_switch_step": event["step"],
            "run_switch_reason": event["reason"],
            "wall_s": round(time.perf_counter() - start, 1),
        }
        name = f"MNIST-1D {optimizer} B={batch} seed {seed}, {epochs} epochs"
        out.append((name, losses, ctl.total_steps, spe, facts))
        print(f"recorded {name}: {losses.size} warmup losses", flush=True)
    return out


# ----------------------------------------------------------------------
# Comparisons.


def make_controller(setting, smoother, total, spe):
    if setting == "reference":
        return AutoLRController.reference(
            total, spe, smoother=smoother, background=False
        )
    return AutoLRController(total, smoother=smoother, background=False)


def closed_loop(ctl, loss_of):
    """Runs warmup with the loss a function of the LR; returns the losses."""
    losses = []
    lr = ctl.lr
    while ctl.phase == "warmup":
        losses.append(loss_of(lr, len(losses)))
        lr = ctl.step(losses[-1])
    return np.asarray(losses)


def replay(ctl, losses):
    """Feeds recorded losses (open loop) until they end or warmup does."""
    for loss in losses:
        if ctl.phase != "warmup":
            break
        ctl.step(float(loss))
    return ctl


def switch_of(ctl):
    event = ctl.switch_event
    if event is None:
        return {"step": None, "reason": "none within the stream"}
    return {
        "step": event["step"],
        "reason": event["reason"],
        "peak_lr": event["peak_lr"],
    }


def compare_tests(setting, losses, total, spe, detectors):
    """Both smoothers' outcomes at every test point of a controller of
    `setting` over `losses` (the bins it would hold)."""
    ctl = make_controller(setting, "numpy", total, spe)
    filters = ctl.settings.filters
    check_every = ctl.settings.check_every
    record = []
    ramp = ctl.ramp_steps
    for key, now in enumerate(
        range(ctl.first_test_step, min(len(losses), ramp) + 1, check_every)
    ):
        centers = np.arange(now) + 0.5
        means = np.asarray(losses[:now], dtype=np.float64)
        counts = np.ones(now)
        outcomes = [
            warmup.minimum_test(
                d,
                centers,
                means,
                counts,
                now,
                check_every,
                False,
                key,
                filters,
            )
            for d in detectors
        ]
        entry = {"now": now, "ran": outcomes[0].ran}
        if outcomes[0].ran:
            a, b = outcomes
            entry.update(
                votes=[a.votes, b.votes],
                gp_votes=[
                    _gp_vote(d, o)
                    for d, o in zip(detectors, outcomes, strict=True)
                ],
                max_dp=float(
                    np.max(
                        np.abs(np.subtract(a.probabilities, b.probabilities))
                    )
                ),
            )
            if a.votes != b.votes:
                seen, variance = warmup.gp_inputs(means, filters)
                entry["why"] = {
                    "probabilities": [
                        list(a.probabilities),
                        list(b.probabilities),
                    ],
                    "hyperparameters": [
                        list(
                            d.fit_hyperparameters(
                                centers / now, seen, counts, variance
                            )
                        )
                        for d in detectors
                    ],
                }
        record.append(entry)
    return record


def _gp_vote(detector, outcome):
    above = sum(p > detector.confidence for p in outcome.probabilities)
    return above > detector.num_tests / 2


def summarize(tests):
    ran = [t for t in tests if t["ran"]]
    agree = sum(t["votes"][0] == t["votes"][1] for t in ran)
    gp_agree = sum(t["gp_votes"][0] == t["gp_votes"][1] for t in ran)
    return {
        "tests": len(tests),
        "gp_tests": len(ran),
        "votes_agree": agree,
        "gp_votes_agree": gp_agree,
        "fraction": agree / len(ran) if ran else None,
        "max_dp": max((t["max_dp"] for t in ran), default=None),
    }


def run_stream(name, kind, losses_or_fn, total, spe, facts, detectors):
    rows = []
    for setting in SETTINGS:
        switches = {}
        stream = None
        for smoother in ("numpy", "tfp"):
            ctl = make_controller(setting, smoother, total, spe)
            if kind == "synthetic":
                fed = closed_loop(ctl, losses_or_fn)
                if smoother == "numpy":
                    stream = fed
            else:
                replay(ctl, losses_or_fn)
                stream = losses_or_fn
            switches[smoother] = switch_of(ctl)
        tests = compare_tests(setting, stream, total, spe, detectors)
        row = {
            "stream": name,
            "kind": kind,
            "setting": setting,
            "steps_per_epoch": spe,
            "total_steps": total,
            "stream_steps": int(len(stream)),
            **summarize(tests),
            "switch_numpy": switches["numpy"],
            "switch_tfp": switches["tfp"],
            "disagreements": [t for t in tests if "why" in t],
        }
        if facts:
            row["run"] = facts
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row):
    frac = "-" if row["fraction"] is None else f"{row['fraction']:.3f}"
    return (
        f"{row['stream']} [{row['setting']}]: {row['votes_agree']}/"
        f"{row['gp_tests']} votes agree ({frac}); switch numpy "
        f"{row['switch_numpy']['step']} ({row['switch_numpy']['reason']}), "
        f"tfp {row['switch_tfp']['step']} ({row['switch_tfp']['reason']})"
    )


def markdown(env, rows, totals):
    lines = [
        "# NumPy vs TensorFlow Probability smoother",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['nproc']} CPUs ({env['processor']})",
        f"- python {env['python']}, numpy {env['numpy']}, scipy "
        f"{env['scipy']}, tensorflow-probability {env['tfp']} (NumPy "
        "substrate)",
        f"- command: `{env['command']}`",
        "",
        "Votes: the test's vote (GP majority and, in the default setting, "
        "the package's filters) with each smoother on the same bins and "
        "subsamples, at every test point with the GP. Switch: a whole "
        "controller run with each smoother (closed loop on synthetic "
        "streams, replayed recorded losses on the MNIST-1D ones).",
        "",
        "| stream | setting | GP tests | votes agree | GP votes agree "
        "| max dp | switch numpy | switch tfp |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stream']} | {r['setting']} | {r['gp_tests']} "
            f"| {r['votes_agree']} | {r['gp_votes_agree']} "
            f"| {_f(r['max_dp'])} | {_sw(r['switch_numpy'])} "
            f"| {_sw(r['switch_tfp'])} |"
        )
    lines += [
        "",
        f"All streams: {totals['votes_agree']} of {totals['gp_tests']} "
        f"votes agree ({totals['fraction']:.4f}); switch steps equal in "
        f"{totals['same_switch']} of {totals['runs']} runs.",
        "",
    ]
    dis = [(r, d) for r in rows for d in r["disagreements"]]
    if dis:
        lines += ["## Disagreements", ""]
        for r, d in dis:
            pa, pb = d["why"]["probabilities"]
            (sa, na), (sb, nb) = d["why"]["hyperparameters"]
            lines.append(
                f"- {r['stream']} [{r['setting']}], test at step {d['now']}: "
                f"votes numpy {d['votes'][0]}, tfp {d['votes'][1]}; "
                f"p numpy {_ps(pa)}, tfp {_ps(pb)}; output scale^2 / noise "
                f"numpy {sa:.4g} / {na:.4g}, tfp {sb:.4g} / {nb:.4g}."
            )
        lines.append("")
    return "\n".join(lines)


def _f(v):
    return "-" if v is None else f"{v:.2g}"


def _ps(ps):
    return "[" + ", ".join(f"{p:.3f}" for p in ps) + "]"


def _sw(s):
    if s["step"] is None:
        return s["reason"]
    return f"{s['step']} ({s['reason']})"


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    detectors = [MinimumDetector()]
    recorded = recorded_streams(args)  # Keras first, as in training.
    from keras_autolr.core.smoothers import TFPMinimumDetector, tfp_numpy

    detectors.append(TFPMinimumDetector())
    rows = []
    for name, fn, total, spe in synthetic_streams(args.quick):
        rows += run_stream(name, "synthetic", fn, total, spe, None, detectors)
    for name, losses, total, spe, facts in recorded:
        rows += run_stream(
            name, "recorded", losses, total, spe, facts, detectors
        )
    gp_tests = sum(r["gp_tests"] for r in rows)
    agree = sum(r["votes_agree"] for r in rows)
    totals = {
        "gp_tests": gp_tests,
        "votes_agree": agree,
        "fraction": agree / gp_tests,
        "runs": len(rows),
        "same_switch": sum(
            r["switch_numpy"]["step"] == r["switch_tfp"]["step"] for r in rows
        ),
    }
    env = environment(scipy=scipy.__version__, tfp=tfp_numpy().__version__)
    env["wall_s"] = round(time.perf_counter() - start, 1)
    env["quick"] = args.quick
    result = {"environment": env, "totals": totals, "rows": rows}
    text = markdown(env, rows, totals)
    print(write_result(args.out, "smoother_agreement", result, [text]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
