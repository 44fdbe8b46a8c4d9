"""One run of the suite: train a task with a method, evaluate, record.

`train_one` builds the task's model (`tasks.py`), compiles it with the
method's optimizer and callbacks (`make_method`), trains it with `fit` for
the task's budget, evaluates it on the held-out split, and returns the run's
record: the metrics, the timings and, for AutoLR, its switch, overshoot and
the weight copies it restored. The optimizers and the grid's schedule are
here too, for the analyses that train the suite's tasks (`replay.py`,
`switch_ceiling.py`, `smoother_agreement.py`).
"""

import math
import time

import numpy as np

from benchmarks.common import finite
from benchmarks.peers import PEERS
from benchmarks.suite_plan import AUTOLR, GRIDS, WEIGHT_DECAY
from benchmarks.tasks import TASKS


def warmup_cosine(peak, warmup_fraction, total_steps):
    """Linear warmup from 0 to `peak`, then cosine decay to 0."""
    from keras.optimizers.schedules import CosineDecay

    warmup = round(warmup_fraction * total_steps)
    if warmup == 0:
        return CosineDecay(peak, total_steps)
    return CosineDecay(
        0.0, total_steps - warmup, warmup_target=peak, warmup_steps=warmup
    )


def schedule_settings(peak, warmup_fraction, total_steps):
    """What a record says of a warmup + cosine schedule."""
    return {
        "peak_lr": peak,
        "warmup_fraction": warmup_fraction,
        "warmup_steps": round(warmup_fraction * total_steps),
        "schedule": "linear warmup from 0, cosine decay to 0",
    }


def make_optimizer(name, learning_rate):
    """AdamP or Keras's LAMB with the suite's weight decay."""
    import keras

    if name == "adamp":
        from keras_autolr import AdamP

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
        options = spec.get("autolr_options", {})
        callback = AutoLR(epochs=epochs, verbose=0, **options)
        return optimizer, [callback], {}
    if method in GRIDS:
        peak, warmup = spec["peak_lr"], spec["warmup_fraction"]
        schedule = warmup_cosine(peak, warmup, total_steps)
        optimizer = make_optimizer(spec["optimizer"], schedule)
        return optimizer, [], schedule_settings(peak, warmup, total_steps)
    if method == "adam_constant":
        optimizer = keras.optimizers.Adam()
        lr = float(optimizer.learning_rate.numpy())
        return optimizer, [], {"peak_lr": lr, "warmup_steps": 0}
    if method == "adamw_cosine":
        schedule = warmup_cosine(1e-3, 0.05, total_steps)
        optimizer = keras.optimizers.AdamW(schedule)
        settings = schedule_settings(1e-3, 0.05, total_steps)
        settings["weight_decay_adamw"] = float(optimizer.weight_decay)
        return optimizer, [], settings
    if method == "schedulefree_adamw":
        optimizer = keras.optimizers.ScheduleFreeAdamW()
        lr = float(optimizer.learning_rate.numpy())
        return optimizer, [], {"peak_lr": lr, "warmup_steps": 0}
    if method in PEERS:
        optimizer, callbacks = PEERS[method](total_steps)
        return optimizer, callbacks, {}
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
        callbacks=callbacks,
        verbose=0,
    )
    fit_time = time.perf_counter() - start
    record = dict(spec)
    record.update(settings)
    if spec["method"] == "schedulefree_reference":
        # The model holds x; its BatchNorm statistics are y's.
        recalibrate_batchnorm(model, data)
    metrics = task.evaluate(model, data)
    if spec["method"] == "schedulefree_adamw":
        schedulefree_to_x(model, optimizer)
        recalibrate_batchnorm(model, data)
        at_y = {f"{k}_at_y": v for k, v in metrics.items()}
        metrics = {**task.evaluate(model, data), **at_y}
    record.update(metrics)
    losses = [finite(v) for v in history.history["loss"]]
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
        record.update(autolr_record(callbacks[0], steps_per_epoch))
        record.update(overshoot(callbacks[0].controller))
        restored = callbacks[0].summary["restored"]
        record["autolr_restored_copy_steps"] = restored
        at_switch = [
            c for s, c in restored if s == record.get("autolr_switch_step")
        ]
        record["autolr_restored_copy_at_switch"] = (
            at_switch[0] if at_switch else None
        )
    return record


def schedulefree_to_x(model, optimizer):
    """Sets the weights to ScheduleFreeAdamW's averaged sequence x, its
    evaluation point.

    Its update keeps y = (1 - beta_1) z + beta_1 x in the model and z in
    the `momentum` slots, so x = (y - (1 - beta_1) z) / beta_1.
    """
    beta = float(optimizer.beta_1)
    for variable in model.trainable_variables:
        z = optimizer._momentums[optimizer._get_variable_index(variable)]
        y = variable.numpy()
        variable.assign((y - (1.0 - beta) * z.numpy()) / beta)


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


def autolr_record(autolr, steps_per_epoch):
    """The switch decision of an `AutoLR` run. The keys keep the names of
    the records already written (`peak_lr`: the landing LR)."""
    ctl = autolr.controller
    event = ctl.switch_event or {}
    step = event.get("step")
    return {
        "autolr_switch_step": step,
        "autolr_switch_epoch": (
            None if step is None else round(step / steps_per_epoch, 2)
        ),
        "autolr_reason": event.get("reason"),
        "autolr_peak_lr": event.get("peak_lr"),
        "autolr_lr_before": event.get("lr_before"),
        "autolr_minimum_lr": event.get("minimum_lr"),
        "autolr_ramp_steps": ctl.ramp_steps,
        # Decay restarts after a blow-up: (step, reason, new landing LR).
        "autolr_rescues": [
            [e["step"], e["reason"], e["peak_lr"]] for e in ctl.rescues
        ],
    }


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
