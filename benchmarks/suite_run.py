"""One run of the suite: train a task with a method, evaluate, record.

`train_one` builds the task's model (`tasks.py`), compiles it with the
method's optimizer and callbacks (`make_method`), trains it with `fit` for
the task's budget, evaluates it on the held-out split, and returns the run's
record: the metrics, the timings and, for AutoLR, its switch, overshoot and
the weight copies it restored.
"""

import math
import time

import numpy as np
import quality
from quality import (
    _schedule_settings,
    make_optimizer,
    warmup_cosine,
)
from suite_plan import AUTOLR, GRIDS
from tasks import TASKS


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
