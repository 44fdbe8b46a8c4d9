"""Benchmark: zero-tuning AutoLR versus a tuned grid and the alternatives.

Every method trains the same small 1-D CNN on MNIST-1D (generated locally
by the `mnist1d` package, no download) for the same number of epochs, at
global batch sizes 256, 2048 and 8192, on seeds 0 and 1:

- `autolr_adamp`, `autolr_lamb`: `AutoLR(epochs=E, verbose=0)` with its
  defaults, no option tuned, on AdamP / `keras.optimizers.Lamb`.
- `oracle_adamp`, `oracle_lamb`: linear warmup then cosine decay to 0
  (`keras.optimizers.schedules.CosineDecay`) on a grid of peak LRs x warmup
  fractions. The whole grid runs on the first seed; the best cell, by final
  test accuracy, is rerun on the other seeds.
- `schedulefree_adamw`: `keras.optimizers.ScheduleFreeAdamW()` with its
  defaults, evaluated at its averaged point x as its documentation says.
- `adam_constant`: `keras.optimizers.Adam()`, constant LR 1e-3.
- `adam_sqrt`: Adam with the square-root scaling rule, peak
  1e-3 * sqrt(B / 256), 5% linear warmup, then cosine decay to 0.

AdamP and LAMB use `weight_decay=1e-4` everywhere (AutoLR and the grid);
the Adam baselines and ScheduleFreeAdamW keep their default of none.

Writes `quality.json`, `quality.md` and `quality.png` to `--out`. Each run
is appended to `quality.progress.jsonl` there as it finishes; a restart
with the same settings skips the runs already recorded.

    python benchmarks/quality.py           # the full benchmark, ~1 hour
    python benchmarks/quality.py --quick   # a smoke test, ~1-2 minutes
"""

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import resumable_runs

HERE = Path(__file__).resolve().parent
FORMAT_VERSION = 1
WEIGHT_DECAY = 1e-4
WITHIN = 0.01  # "Within 1.0 accuracy point" of the oracle.
EVAL_BATCH = 2048

AUTOLR = ("autolr_adamp", "autolr_lamb")
ORACLES = ("oracle_adamp", "oracle_lamb")
ALTERNATIVES = ("schedulefree_adamw", "adam_constant", "adam_sqrt")
METHODS = AUTOLR + ORACLES + ALTERNATIVES
ZERO_TUNING = AUTOLR + ALTERNATIVES
OPTIMIZER = {
    "autolr_adamp": "adamp",
    "autolr_lamb": "lamb",
    "oracle_adamp": "adamp",
    "oracle_lamb": "lamb",
    "schedulefree_adamw": "schedulefree_adamw",
    "adam_constant": "adam",
    "adam_sqrt": "adam",
}
GRID_OPTION = {"oracle_adamp": "adamp_lrs", "oracle_lamb": "lamb_lrs"}

FULL = {
    "epochs": 20,
    "batch_sizes": [256, 2048, 8192],
    "seeds": [0, 1],
    "train_size": 40_000,
    "test_size": 10_000,
    "adamp_lrs": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
    "lamb_lrs": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "warmups": [0.0, 0.05, 0.2],
}
QUICK = {
    "epochs": 8,
    "batch_sizes": [2048],
    "seeds": [0],
    "train_size": 8_000,
    "test_size": 2_000,
    "adamp_lrs": [1e-3, 1e-2],
    "lamb_lrs": [],
    "warmups": [0.0, 0.05],
}

POLICY = {
    "oracle": (
        "Warmup + cosine via keras.optimizers.schedules.CosineDecay. The "
        "full grid (peak LR x warmup fraction) runs on the first seed only; "
        "the best cell by final test accuracy on that seed is rerun on the "
        "other seeds, and its mean over all seeds is reported. Runs needed "
        "= grid size + reruns. The cell is chosen on test accuracy, which "
        "favours the oracle."
    ),
    "weight_decay": (
        f"AdamP and keras.optimizers.Lamb use weight_decay={WEIGHT_DECAY} "
        "in AutoLR and in the oracle grid alike; Adam and "
        "ScheduleFreeAdamW keep their default (none)."
    ),
    "autolr": "AutoLR(epochs=E, verbose=0): every option at its default.",
    "schedulefree_adamw": (
        "keras.optimizers.ScheduleFreeAdamW() defaults; test accuracy at "
        "the averaged point x (its evaluation point), the accuracy at the "
        "training point y is recorded as test_accuracy_at_y."
    ),
}


# ----------------------------------------------------------------------
# Command line.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Lists are comma-separated. Options left out take the full "
        "(or, with --quick, the quick) settings.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: B=2048, seed 0, 8,000 train samples, 8 epochs, "
        "a 2x2 AdamP grid; a minute or two",
    )
    parser.add_argument(
        "--epochs", type=int, help=f"epoch budget (full: {FULL['epochs']})"
    )
    parser.add_argument(
        "--batch-sizes", type=_ints, help="global batch sizes (256,2048,8192)"
    )
    parser.add_argument("--seeds", type=_ints, help="seeds (0,1)")
    parser.add_argument(
        "--only",
        type=_methods,
        help=f"run only these methods, from {','.join(METHODS)}; the "
        "report still covers every run already recorded",
    )
    parser.add_argument(
        "--rerun",
        type=_methods,
        help="run these methods again even where recorded (after a change "
        "to their code); the newest record of a run is the one reported",
    )
    parser.add_argument(
        "--train-size", type=int, help="training samples (40000)"
    )
    parser.add_argument("--test-size", type=int, help="test samples (10000)")
    parser.add_argument(
        "--data-seed",
        type=int,
        default=42,
        help="seed of the MNIST-1D generator (42, its default)",
    )
    parser.add_argument(
        "--adamp-lrs", type=_floats, help="peak LRs of the AdamP grid"
    )
    parser.add_argument(
        "--lamb-lrs", type=_floats, help="peak LRs of the LAMB grid"
    )
    parser.add_argument(
        "--warmups", type=_floats, help="warmup fractions (0,0.05,0.2)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "results",
        help="output folder (benchmarks/results)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=HERE / ".cache",
        help="where the generated data set is cached (benchmarks/.cache)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="runs trained in parallel, one process each (2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="TensorFlow intra- and inter-op threads per worker (1)",
    )
    args = parser.parse_args(argv)
    problem = _check_args(args)
    if problem:
        parser.error(problem)
    return args


def _check_args(args):
    """What is wrong with the options, or None."""
    for name in ("epochs", "train_size", "test_size", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {value}"
    for name in ("batch_sizes", "seeds"):
        if getattr(args, name) == []:
            return f"--{name.replace('_', '-')} needs at least one value"
    if any(b < 1 for b in args.batch_sizes or []):
        return f"--batch-sizes must be >= 1, got {args.batch_sizes}"
    if any(not 0 <= w < 1 for w in args.warmups or []):
        return f"--warmups must be in [0, 1), got {args.warmups}"
    for name in ("adamp_lrs", "lamb_lrs"):
        if any(lr <= 0 for lr in getattr(args, name) or []):
            return f"--{name.replace('_', '-')} must be > 0"
    return None


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def _methods(text):
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown methods {unknown}; choose from {list(METHODS)}"
        )
    return names


def resolve_settings(args):
    """The explicit options over the full or quick preset."""
    preset = QUICK if args.quick else FULL
    settings = {"quick": bool(args.quick), "data_seed": args.data_seed}
    for name, default in preset.items():
        value = getattr(args, name)
        if value is None:
            value = list(default) if isinstance(default, list) else default
        settings[name] = value
    settings["methods"] = [
        m for m in METHODS if m not in GRID_OPTION or settings[GRID_OPTION[m]]
    ]
    settings["weight_decay"] = WEIGHT_DECAY
    return settings


def fingerprint(settings):
    """Hash of what changes a run's result (not which runs are done)."""
    keys = ("epochs", "train_size", "test_size", "data_seed", "weight_decay")
    blob = {k: settings[k] for k in keys}
    blob["format"] = FORMAT_VERSION
    text = json.dumps(blob, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------
# Data and model.


def make_data(cache_dir, train_size, test_size, seed):
    """The cached MNIST-1D file, generated first if missing."""
    num_samples = 10 * math.ceil((train_size + test_size) / 10)
    path = Path(cache_dir) / f"mnist1d-n{num_samples}-seed{seed}.npz"
    if not path.exists():
        _generate(path, num_samples, seed)
    return path


def load_data(cache_dir, train_size, test_size, seed):
    """MNIST-1D as ((x, y), (x_test, y_test)), x of shape (N, 40, 1)."""
    total = train_size + test_size
    path = make_data(cache_dir, train_size, test_size, seed)
    with np.load(path) as arrays:
        x, y = arrays["x"], arrays["y"]
    x = x[..., None]
    split = slice(0, train_size), slice(train_size, total)
    return tuple((x[s], y[s]) for s in split)


def _generate(path, num_samples, seed):
    """`mnist1d.data.make_dataset` with its default args but the size."""
    from mnist1d.data import get_dataset_args, make_dataset

    print(f"Generating MNIST-1D ({num_samples} samples) into {path} ...")
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)
    # The generator shuffles, then splits at `train_split`; we split again.
    x = np.concatenate([data["x"], data["x_test"]]).astype("float32")
    y = np.concatenate([data["y"], data["y_test"]]).astype("int32")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)


def build_model(length=40):
    """Conv1D 32-5, 32-5/2, 64-3/2, global average pool, Dense 10 logits."""
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((length, 1)),
            layers.Conv1D(32, 5, padding="same", activation="relu"),
            layers.Conv1D(32, 5, 2, padding="same", activation="relu"),
            layers.Conv1D(64, 3, 2, padding="same", activation="relu"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(10),
        ]
    )


# ----------------------------------------------------------------------
# Methods.


def warmup_cosine(peak, warmup_fraction, total_steps):
    """Linear warmup from 0 to `peak`, then cosine decay to 0."""
    from keras.optimizers.schedules import CosineDecay

    warmup = round(warmup_fraction * total_steps)
    if warmup == 0:
        return CosineDecay(peak, total_steps)
    return CosineDecay(
        0.0, total_steps - warmup, warmup_target=peak, warmup_steps=warmup
    )


def make_optimizer(name, learning_rate):
    import keras

    if name == "adamp":
        from keras_autolr.optimizers import AdamP

        return AdamP(learning_rate=learning_rate, weight_decay=WEIGHT_DECAY)
    if name == "lamb":
        return keras.optimizers.Lamb(
            learning_rate=learning_rate, weight_decay=WEIGHT_DECAY
        )
    raise ValueError(f"Unknown optimizer {name!r}")


def make_method(spec, epochs, total_steps):
    """(optimizer, callbacks, recorded settings) of one run."""
    import keras

    method = spec["method"]
    if method in AUTOLR:
        from keras_autolr import AutoLR

        optimizer = make_optimizer(spec["optimizer"], 1e-3)  # Unused LR.
        return optimizer, [AutoLR(epochs=epochs, verbose=0)], {}
    if method in ORACLES:
        peak, warmup = spec["peak_lr"], spec["warmup_fraction"]
        schedule = warmup_cosine(peak, warmup, total_steps)
        optimizer = make_optimizer(spec["optimizer"], schedule)
        return optimizer, [], _schedule_settings(peak, warmup, total_steps)
    if method == "schedulefree_adamw":
        optimizer = keras.optimizers.ScheduleFreeAdamW()
        lr = float(optimizer.learning_rate.numpy())
        return optimizer, [], {"peak_lr": lr, "warmup_steps": 0}
    if method == "adam_constant":
        optimizer = keras.optimizers.Adam()
        lr = float(optimizer.learning_rate.numpy())
        return optimizer, [], {"peak_lr": lr, "warmup_steps": 0}
    if method == "adam_sqrt":
        peak = 1e-3 * math.sqrt(spec["batch_size"] / 256)
        schedule = warmup_cosine(peak, 0.05, total_steps)
        optimizer = keras.optimizers.Adam(schedule)
        return optimizer, [], _schedule_settings(peak, 0.05, total_steps)
    raise ValueError(f"Unknown method {method!r}")


def _schedule_settings(peak, warmup_fraction, total_steps):
    return {
        "peak_lr": peak,
        "warmup_fraction": warmup_fraction,
        "warmup_steps": round(warmup_fraction * total_steps),
        "schedule": "linear warmup from 0, cosine decay to 0",
    }


# ----------------------------------------------------------------------
# One run.


def train_one(spec, data, epochs):
    """Trains and evaluates one run; returns its record."""
    import keras

    (x_train, y_train), (x_test, y_test) = data
    batch_size = spec["batch_size"]
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total_steps = epochs * steps_per_epoch
    keras.backend.clear_session()  # Each run starts from the same state.
    keras.utils.set_random_seed(spec["seed"])
    model = build_model(x_train.shape[1])
    optimizer, callbacks, settings = make_method(spec, epochs, total_steps)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    record = dict(spec)
    record.update(settings)
    record.update(evaluate(model, optimizer, spec["method"], x_test, y_test))
    losses = [_finite(v) for v in history.history["loss"]]
    record.update(
        final_train_loss=losses[-1],
        train_loss_per_epoch=losses,
        wall_time_s=round(time.perf_counter() - start, 2),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        num_params=model.count_params(),
    )
    if spec["method"] in AUTOLR:
        record.update(autolr_record(callbacks[0], steps_per_epoch))
    return record


def evaluate(model, optimizer, method, x_test, y_test):
    """Final test loss and accuracy (at x for ScheduleFreeAdamW)."""
    result = _evaluate(model, x_test, y_test)
    if method != "schedulefree_adamw":
        return result
    at_y = {f"{k}_at_y": v for k, v in result.items()}
    _schedulefree_to_x(model, optimizer)
    return {**_evaluate(model, x_test, y_test), **at_y}


def _evaluate(model, x, y):
    logs = model.evaluate(
        x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True
    )
    return {
        "test_accuracy": _finite(logs["accuracy"]),
        "test_loss": _finite(logs["loss"]),
    }


def _schedulefree_to_x(model, optimizer):
    """Sets the weights to ScheduleFreeAdamW's averaged sequence x.

    Its update keeps y = (1 - beta_1) z + beta_1 x in the model and z in
    the `momentum` slots, so x = (y - (1 - beta_1) z) / beta_1.
    """
    beta = float(optimizer.beta_1)
    for variable in model.trainable_variables:
        z = optimizer._momentums[optimizer._get_variable_index(variable)]
        y = variable.numpy()
        variable.assign((y - (1.0 - beta) * z.numpy()) / beta)


def autolr_record(autolr, steps_per_epoch):
    """The switch decision of an `AutoLR` run."""
    ctl = autolr.controller
    event = ctl.switch_event or {}
    return {
        "autolr_switch_step": event.get("step"),
        "autolr_switch_epoch": (
            None
            if event.get("step") is None
            else round(event["step"] / steps_per_epoch, 2)
        ),
        "autolr_reason": event.get("reason"),
        "autolr_peak_lr": event.get("peak_lr"),
        "autolr_lr_before": event.get("lr_before"),
        "autolr_minimum_lr": event.get("minimum_lr"),
        "autolr_ramp_steps": ctl.ramp_steps,
        # Decay restarts after a blow-up: (step, reason, new peak LR).
        "autolr_rescues": [
            [e["step"], e["reason"], e["peak_lr"]] for e in ctl.rescues
        ],
    }


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------
# The plan, resumable.


def run_key(spec):
    lr, warmup = spec.get("peak_lr"), spec.get("warmup_fraction")
    cell = "" if lr is None else f"/lr{lr:.6g}/wu{warmup:g}"
    return f"{spec['method']}/B{spec['batch_size']}/seed{spec['seed']}{cell}"


def _spec(method, batch_size, seed, peak_lr=None, warmup=None):
    spec = {
        "method": method,
        "optimizer": OPTIMIZER[method],
        "batch_size": batch_size,
        "seed": seed,
    }
    if peak_lr is not None:
        spec.update(peak_lr=peak_lr, warmup_fraction=warmup)
    return spec


def grid_cells(settings, method):
    lrs = settings[GRID_OPTION[method]]
    return [(lr, w) for lr in lrs for w in settings["warmups"]]


def plan_fixed(settings, methods):
    """Every run known before any result: single runs and seed-0 grids."""
    first = settings["seeds"][0]
    specs = []
    for method in [m for m in methods if m in ZERO_TUNING]:
        for seed in settings["seeds"]:
            for batch_size in settings["batch_sizes"]:
                specs.append(_spec(method, batch_size, seed))
    for method in [m for m in methods if m in ORACLES]:
        for batch_size in settings["batch_sizes"]:
            for lr, warmup in grid_cells(settings, method):
                specs.append(_spec(method, batch_size, first, lr, warmup))
    return specs


def best_cell(settings, method, batch_size, done):
    """The grid cell with the best first-seed accuracy, once all are run."""
    first = settings["seeds"][0]
    results = []
    for lr, warmup in grid_cells(settings, method):
        key = run_key(_spec(method, batch_size, first, lr, warmup))
        if key not in done:
            return None
        accuracy = done[key]["test_accuracy"]
        results.append((-1.0 if accuracy is None else accuracy, lr, warmup))
    return max(results, key=lambda r: r[0])[1:] if results else None


def plan_reruns(settings, methods, done):
    """The best oracle cells on the other seeds (known once grids finish)."""
    specs = []
    for method in [m for m in methods if m in ORACLES]:
        for batch_size in settings["batch_sizes"]:
            cell = best_cell(settings, method, batch_size, done)
            if cell is None:
                continue
            for seed in settings["seeds"][1:]:
                specs.append(_spec(method, batch_size, seed, *cell))
    return specs


def make_runner(args, settings, progress, fp, data_args):
    """The runner of the plan's runs, resumable from `progress`; workers
    load the data of `make_data(*data_args)`."""
    return resumable_runs.Runner(
        progress,
        fingerprint_of=lambda record: fp,
        code=code_version(),
        key=run_key,
        work=_worker_run,
        job=lambda spec: (spec, settings["epochs"]),
        init=_init_worker,
        init_args=(args.threads, data_args),
        describe=describe,
        workers=args.workers,
        rerun=args.rerun,
    )


_WORKER = {}


def _init_worker(threads, data_args):
    """Sets the threads and loads the data, once per process."""
    if "data" not in _WORKER:
        configure_threads(threads)
        _WORKER.update(data=load_data(*data_args), threads=threads)


def _worker_run(job):
    spec, epochs = job
    record = train_one(spec, _WORKER["data"], epochs)
    record.update(key=run_key(spec), threads=_WORKER["threads"])
    return record


def run_plan(runner, settings, methods):
    """The fixed runs, then the reruns that their results call for."""
    runner.run("single runs and grids", plan_fixed(settings, methods))
    reruns = plan_reruns(settings, methods, runner.done)
    runner.run("best-cell reruns", reruns)
    return runner.done


def describe(record):
    text = (
        f"{record['key']}: test acc {_fmt(record['test_accuracy'])}, "
        f"train loss {_fmt(record['final_train_loss'])}, "
        f"{record['wall_time_s']:.0f} s"
    )
    if record.get("autolr_reason"):
        text += (
            f"; switch {record['autolr_reason']} at step "
            f"{record['autolr_switch_step']}/{record['total_steps']}, peak "
            f"{record['autolr_peak_lr']:.3g} (from "
            f"{record['autolr_lr_before']:.3g})"
        )
    return text


def _fmt(value, spec=".4f"):
    return "nan" if value is None else format(value, spec)


# ----------------------------------------------------------------------
# Summary.


def reported_runs(settings, done):
    """The recorded runs that the full plan (all methods) contains."""
    methods = settings["methods"]
    specs = plan_fixed(settings, methods)
    specs += plan_reruns(settings, methods, done)
    keys = [run_key(s) for s in specs]
    return [done[k] for k in keys if k in done]


def summarize(settings, runs):
    """{method: {batch size: stats}} of the final configuration of each."""
    by_key = {r["key"]: r for r in runs}
    summary = {}
    for method in settings["methods"]:
        summary[method] = {}
        for batch_size in settings["batch_sizes"]:
            cell = None
            if method in ORACLES:
                cell = best_cell(settings, method, batch_size, by_key)
                if cell is None:
                    continue
            specs = [
                _spec(method, batch_size, seed, *(cell or ()))
                for seed in settings["seeds"]
            ]
            found = [by_key[run_key(s)] for s in specs if run_key(s) in by_key]
            if not found:
                continue
            stats = _stats(found, cell)
            if cell is not None:
                stats["best_at_grid_edge"] = _at_edge(settings, method, cell)
            summary[method][str(batch_size)] = stats
    return summary


def _at_edge(settings, method, cell):
    lrs = settings[GRID_OPTION[method]]
    return cell[0] in (min(lrs), max(lrs))


def _stats(records, cell):
    accs = [r["test_accuracy"] for r in records]
    accs = [0.0 if a is None else a for a in accs]
    stats = {
        "mean": float(np.mean(accs)),
        "spread": float((max(accs) - min(accs)) / 2),
        "num_seeds": len(accs),
        "seeds": [r["seed"] for r in records],
        "accuracies": accs,
    }
    if cell is not None:
        stats.update(best_peak_lr=cell[0], best_warmup_fraction=cell[1])
    return stats


def oracle_report(settings, runs):
    """Per oracle and batch size: the best cell, its grid and its cost."""
    by_key = {r["key"]: r for r in runs}
    first = settings["seeds"][0]
    report = {}
    for method in [m for m in settings["methods"] if m in ORACLES]:
        report[method] = {}
        for batch_size in settings["batch_sizes"]:
            grid = {}
            for lr, warmup in grid_cells(settings, method):
                spec = _spec(method, batch_size, first, lr, warmup)
                record = by_key.get(run_key(spec))
                if record is not None:
                    grid[f"{lr:g}/{warmup:g}"] = record["test_accuracy"]
            cell = best_cell(settings, method, batch_size, by_key)
            report[method][str(batch_size)] = {
                "grid_seed": first,
                "grid_size": len(grid_cells(settings, method)),
                "grid_runs_done": len(grid),
                "reruns": len(settings["seeds"]) - 1,
                "best_peak_lr": None if cell is None else cell[0],
                "best_warmup_fraction": None if cell is None else cell[1],
                "best_at_grid_edge": (
                    None if cell is None else _at_edge(settings, method, cell)
                ),
                "grid_test_accuracy": grid,
            }
    return report


def verdicts(settings, summary):
    """Per batch size and AutoLR method: near the oracle, above the rest?"""
    lines = []
    for batch_size in map(str, settings["batch_sizes"]):
        for method in [m for m in settings["methods"] if m in AUTOLR]:
            ours = summary[method].get(batch_size)
            if ours is None:
                continue
            lines.append(_verdict(settings, summary, method, batch_size))
    return lines


def _verdict(settings, summary, method, batch_size):
    mean = summary[method][batch_size]["mean"]
    oracle = "oracle_" + method.split("_", 1)[1]
    text = f"B={batch_size}, {method} {100 * mean:.2f}: "
    best = summary.get(oracle, {}).get(batch_size)
    if best is None:
        text += f"{oracle} not run; "
    else:
        gap = 100 * (mean - best["mean"])
        near = "yes" if mean >= best["mean"] - WITHIN else "no"
        text += (
            f"within {100 * WITHIN:.1f} point of {oracle} "
            f"({100 * best['mean']:.2f}, {gap:+.2f}): {near}; "
        )
    alts = [
        (summary[m][batch_size]["mean"], m)
        for m in settings["methods"]
        if m in ALTERNATIVES and batch_size in summary[m]
    ]
    if not alts:
        return text + "no zero-tuning alternative run."
    top, name = max(alts)
    above = "yes" if mean > top else "no"
    return text + (
        f"above every zero-tuning alternative (best {name} "
        f"{100 * top:.2f}): {above}."
    )


# ----------------------------------------------------------------------
# Outputs.


def write_json(path, meta, settings, runs, summary, oracles, lines):
    payload = {
        **meta,
        "settings": settings,
        "policy": POLICY,
        "summary": summary,
        "oracle": oracles,
        "verdicts": lines,
        "runs": runs,
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")


def write_markdown(path, meta, settings, runs, summary, oracles, lines):
    parts = [
        "# Quality benchmark: AutoLR versus a tuned grid and alternatives",
        "",
        f"MNIST-1D, {settings['train_size']} train / "
        f"{settings['test_size']} test, 1-D CNN, {settings['epochs']} "
        f"epochs, seeds {settings['seeds']}. Final test accuracy (%), "
        "mean +- spread (half the range) over seeds.",
        "",
        *_summary_table(settings, summary),
        "",
        "## Verdicts",
        "",
        *[f"- {line}" for line in lines],
        "",
        *_switch_table(runs),
        *_grid_tables(settings, oracles),
        "## Policy",
        "",
        *[f"- {k}: {v}" for k, v in POLICY.items()],
        "",
        "## Run",
        "",
        f"- Command: `{meta['command']}`",
        f"- Wall time of this invocation: {meta['wall_time_s']:.0f} s; "
        f"sum of the run times: {meta['sum_run_wall_time_s']:.0f} s "
        f"over {meta['num_runs']} runs.",
        f"- Started {meta['started']}; {meta['environment']}",
        f"- Code of this invocation: {meta['code']}; of the reported runs, "
        f"by method: {_code_versions(runs)}.",
        "",
    ]
    path.write_text("\n".join(parts))


def _code_versions(runs):
    """`method (commit, ...)` for every method, from each run's record."""
    versions = {}
    for record in runs:
        versions.setdefault(record["method"], set()).add(record.get("code"))
    return "; ".join(
        f"{method} ({', '.join(sorted(str(c) for c in codes))})"
        for method, codes in versions.items()
    )


def _summary_table(settings, summary):
    """Method x batch size: mean +- spread over seeds, and runs needed."""
    sizes = [str(b) for b in settings["batch_sizes"]]
    rows = [
        "| method | "
        + " | ".join(f"B={b}" for b in sizes)
        + " | runs needed |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for method in settings["methods"]:
        cells = [_cell(summary[method].get(b)) for b in sizes]
        rows.append(
            f"| {method} | " + " | ".join(cells) + f" | "
            f"{_runs_needed(settings, method)} |"
        )
    rows += [
        "",
        "Oracle cells are `(peak LR, warmup fraction)` chosen on seed "
        f"{settings['seeds'][0]}; `*` marks a best cell at the edge of the "
        "LR grid. Zero-tuning methods need 1 run (each was also run on "
        "every seed to get the mean).",
    ]
    return rows


def _cell(stats):
    if stats is None:
        return "-"
    text = f"{100 * stats['mean']:.2f} +- {100 * stats['spread']:.2f}"
    if stats["num_seeds"] < 2:
        text += f" (n={stats['num_seeds']})"
    if "best_peak_lr" in stats:
        edge = "*" if stats["best_at_grid_edge"] else ""
        text += (
            f" ({stats['best_peak_lr']:g}{edge}, "
            f"{stats['best_warmup_fraction']:g})"
        )
    return text


def _runs_needed(settings, method):
    if method not in ORACLES:
        return "1"
    grid = len(grid_cells(settings, method))
    reruns = len(settings["seeds"]) - 1
    return f"{grid + reruns} ({grid} grid + {reruns} rerun)"


def _switch_table(runs):
    """Where each AutoLR run ended its warmup, and at what LR."""
    rows = [
        "## AutoLR switches",
        "",
        "| run | reason | step / total | epoch | peak LR | LR before "
        "| decay restarts (step: new peak LR) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in [r for r in runs if r["method"] in AUTOLR]:
        rescues = ", ".join(
            f"{step}: {peak:.3g}"
            for step, _, peak in r.get("autolr_rescues", [])
        )
        rows.append(
            f"| {r['key']} | {r['autolr_reason']} | "
            f"{r['autolr_switch_step']} / {r['total_steps']} | "
            f"{r['autolr_switch_epoch']} | {_fmt(r['autolr_peak_lr'], '.3g')}"
            f" | {_fmt(r['autolr_lr_before'], '.3g')} | {rescues or 'none'} |"
        )
    return rows + [""] if len(rows) > 4 else []


def _grid_tables(settings, oracles):
    """Seed-0 accuracy of every grid cell, warmup x peak LR."""
    rows = []
    for method, per_batch in oracles.items():
        lrs = settings[GRID_OPTION[method]]
        for batch_size, info in per_batch.items():
            edge = (
                " (best at the grid edge)" if info["best_at_grid_edge"] else ""
            )
            rows += [
                f"## {method}, B={batch_size}, seed {info['grid_seed']}{edge}",
                "",
                "| warmup \\ peak LR | "
                + " | ".join(f"{v:g}" for v in lrs)
                + " |",
                "|---|" + "---|" * len(lrs),
            ]
            for warmup in settings["warmups"]:
                accs = [
                    info["grid_test_accuracy"].get(f"{lr:g}/{warmup:g}")
                    for lr in lrs
                ]
                rows.append(
                    f"| {warmup:g} | "
                    + " | ".join(
                        "-" if a is None else f"{100 * a:.2f}" for a in accs
                    )
                    + " |"
                )
            rows.append("")
    return rows


def write_plot(path, settings, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in settings["methods"]:
        points = sorted((int(b), s) for b, s in summary[method].items())
        if not points:
            continue
        style = "--" if method in ORACLES else "-"
        style = ":" if method in ALTERNATIVES else style
        ax.errorbar(
            [b for b, _ in points],
            [100 * s["mean"] for _, s in points],
            yerr=[100 * s["spread"] for _, s in points],
            fmt="o" + style,
            capsize=3,
            label=method,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(settings["batch_sizes"])
    ax.set_xticklabels([str(b) for b in settings["batch_sizes"]])
    ax.set_xlabel("global batch size")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(
        f"MNIST-1D, 1-D CNN, {settings['epochs']} epochs "
        f"(mean +- half range, seeds {settings['seeds']})"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------


def configure_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def code_version():
    """The git commit of the checkout, and whether keras_autolr/ differs."""
    root = HERE.parent

    def git(*args):
        try:
            result = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True
            )
        except OSError:  # No git.
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "keras_autolr")
    return commit + (" + uncommitted changes in keras_autolr/" if dirty else "")


def environment(workers, threads):
    import keras

    return (
        f"Python {platform.python_version()}, Keras {keras.__version__} "
        f"({keras.backend.backend()}), NumPy {np.__version__}, "
        f"{workers} worker(s) x {threads} thread(s), {os.cpu_count()} CPUs, "
        f"{platform.machine()}."
    )


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
    methods = [m for m in settings["methods"] if m in (args.only or METHODS)]
    if not methods:
        sys.exit(f"No method of {args.only} is in this configuration.")
    args.out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(settings)
    progress = args.out / "quality.progress.jsonl"
    data_args = (
        args.cache_dir,
        settings["train_size"],
        settings["test_size"],
        settings["data_seed"],
    )
    make_data(*data_args)  # Once, before any worker starts.
    runner = make_runner(args, settings, progress, fp, data_args)
    try:
        done = run_plan(runner, settings, methods)
    except KeyboardInterrupt:
        print(
            f"Interrupted: {len(runner.done)} runs are saved in {progress}; "
            "the same command resumes from there.",
            file=sys.stderr,
        )
        return 130
    runs = reported_runs(settings, done)
    summary = summarize(settings, runs)
    oracles = oracle_report(settings, runs)
    lines = verdicts(settings, summary)
    env = environment(args.workers, args.threads)
    meta = {
        "benchmark": "quality",
        "command": shlex.join(["python", *sys.argv]),
        "started": started,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "sum_run_wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1),
        "num_runs": len(runs),
        "fingerprint": fp,
        "code": runner.code,
        "environment": env,
    }
    write_json(
        args.out / "quality.json", meta, settings, runs, summary, oracles, lines
    )
    write_markdown(
        args.out / "quality.md", meta, settings, runs, summary, oracles, lines
    )
    write_plot(args.out / "quality.png", settings, summary)
    print("\n".join(lines))
    print(
        f"Wrote {args.out}/quality.{{json,md,png}} in {meta['wall_time_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
