"""Every decision of the controller and the callback, traced, to check that
a change of code changes none.

    python -m benchmarks.decision_trace OUT.json [--keras]

Runs the controller in closed loop (the loss a function of the LR it
chose) on 9 loss streams (a U in log LR at three depths and noises, a
cliff to NaN, an explosion to chance, one NaN, a blow-up and NaNs during
decay, a flat loss) x 7 configurations x 2 seeds x chunks of 1 and 4
steps, and writes the `Report` after every update, the events and the
final state. With `--keras` it also traces 4 `fit`s of a digits MLP with
AutoLR (`steps_per_execution` 1 and 4, `max_lr` 1 and 30, a
`backup_dir`): the LR of every step, the events, the files written and a
hash of the final weights. Two traces of the same machine are equal
exactly when no decision changed (`cmp A.json B.json`).
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import warnings

import numpy as np

from keras_autolr import AutoLRController


def stream(kind, seed):
    """loss_of(lr, step) closed-loop: a U in log10 LR."""
    rng = np.random.default_rng(seed)

    def u(lr, step, best=-2.0, noise=0.05):
        x = math.log10(lr)
        return 1.0 + (x - best) ** 2 + noise * rng.normal()

    if kind == "u":
        return lambda lr, s: u(lr, s)
    if kind == "u_noisy":
        return lambda lr, s: u(lr, s, noise=0.3)
    if kind == "u_low":
        return lambda lr, s: u(lr, s, best=-3.3, noise=0.1)
    if kind == "cliff":
        return lambda lr, s: math.nan if lr > 0.05 else u(lr, s)
    if kind == "explode":
        return lambda lr, s: (
            2.3 + 0.01 * rng.normal() if lr > 0.03 else u(lr, s)
        )
    if kind == "nan_once":
        return lambda lr, s: math.nan if s == 57 else u(lr, s)
    if kind == "decay_blowup":
        return lambda lr, s: 8.0 + rng.normal() if 900 < s < 1000 else u(lr, s)
    if kind == "decay_nan":
        return lambda lr, s: math.nan if s in (700, 701, 950) else u(lr, s)
    if kind == "flat":
        return lambda lr, s: 1.0 + 0.05 * rng.normal()
    raise ValueError(kind)


KINDS = [
    "u",
    "u_noisy",
    "u_low",
    "cliff",
    "explode",
    "nan_once",
    "decay_blowup",
    "decay_nan",
    "flat",
]
CONFIGS = {
    "default": {},
    "reference": dict(
        min_lr=1e-5,
        max_warmup_fraction=0.5,
        decay="constant_cosine",
        patience=3,
        min_bins=3,
        act_at_once=True,
        filters=False,
        landing=1.0,
        check_every=100,
    ),
    "bins": dict(bin_steps=2, max_bins=16, check_every=8),
    "linear": dict(
        warmup="linear", decay="cosine", patience=1, background=False
    ),
    "landing1": dict(landing=1.0, confidence=0.9, num_tests=3),
    "at_once": dict(act_at_once=True, check_every=12),
    "cap": dict(max_warmup_fraction=0.1, min_lr=1e-6),
}


def trace(config, kind, seed, chunk, total=1200):
    """One closed-loop run: its reports, events and final state."""
    options = dict(config)
    if chunk > 1:
        options["chunk_steps"] = chunk
        every = options.get("check_every")
        if every is not None and every % chunk:
            options["check_every"] = every * chunk
    ctl = AutoLRController(total, seed=seed, **options)
    loss_of = stream(kind, seed)
    reports = []
    step = 0
    while step < total:
        lrs = [float(ctl.lr_at(step + i)) for i in range(chunk)]
        losses = [loss_of(lr, step + i) for i, lr in enumerate(lrs)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if chunk == 1:
                report = ctl.update(losses[0])
            else:
                report = ctl.update_steps(losses)
        step += chunk
        fields = {
            f.name: getattr(report, f.name)
            for f in dataclasses.fields(report)
            if not f.name.startswith("_")
        }
        fields["at_lowest_loss"] = report.at_lowest_loss
        reports.append(fields)
    return {"reports": reports, "events": ctl.events, "state": ctl.get_state()}


def controller_traces():
    return {
        f"{name}/{kind}/{seed}/{chunk}": trace(config, kind, seed, chunk)
        for name, config in CONFIGS.items()
        for kind in KINDS
        for seed in (0, 1)
        for chunk in (1, 4)
    }


def keras_trace(steps_per_execution, max_lr, backup_dir):
    """One fit of a digits MLP with AutoLR: every LR, the events, the files
    and a hash of the final weights."""
    import keras
    from sklearn.datasets import load_digits

    from keras_autolr import AdamP, AutoLR

    keras.utils.set_random_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype("float32"), y.astype("int32")
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=AdamP(weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    autolr = AutoLR(epochs=8, verbose=0, max_lr=max_lr, backup_dir=backup_dir)
    lrs = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            lrs.append(float(logs["learning_rate"]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=8,
            verbose=0,
            shuffle=False,
            callbacks=[autolr, Record()],
        )
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return {
        "lrs": lrs,
        "events": autolr.controller.events,
        "weights": digest.hexdigest(),
        "files": sorted(os.listdir(backup_dir)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the JSON file to write")
    parser.add_argument("--keras", action="store_true", help="also fit")
    args = parser.parse_args(argv)
    traces = {"controller": controller_traces()}
    if args.keras:
        traces["keras"] = {}
        for chunk in (1, 4):
            for max_lr in (1.0, 30.0):
                with tempfile.TemporaryDirectory() as d:
                    key = f"{chunk}/{max_lr}"
                    traces["keras"][key] = keras_trace(chunk, max_lr, d)
    with open(args.out, "w") as f:
        json.dump(traces, f, sort_keys=True)
    print(f"{len(traces['controller'])} controller runs -> {args.out}")


if __name__ == "__main__":
    main()
