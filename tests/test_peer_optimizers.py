"""The zero-tuning peers in `benchmarks/peers/` against their references,
step by step, and in `fit`.

- `ScheduleFreeAdamW` against `schedulefree` 1.4.1 (PyTorch, the authors'
  package: `AdamWScheduleFree`, and `AdamWScheduleFreeReference`, which
  stores x) and `optax.contrib.schedule_free_adamw` 0.2.8 (JAX).
- `Prodigy` against `optax.contrib.prodigy` 0.2.8.

Every comparison runs in float64 (on JAX only with JAX_ENABLE_X64, else in
float32 with the looser tolerance): the same initial weights, the same
gradients (those of a fixed noisy quadratic at the reference's weights,
fed to both), the weights compared after every one of `STEPS` steps.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import support  # noqa: E402

# The repository root, as `python -m benchmarks.suite` has it on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.peers import (  # noqa: E402
    PEERS,
    Prodigy,
    ScheduleFreeAdamW,
    ScheduleFreeEval,
    prodigy_cosine,
    recalibrate_batchnorm,
)

STEPS = 50
SHAPES = {"kernel": (6, 4), "bias": (4,)}
# 2**-7: exact in the float32 learning-rate variable Keras keeps.
LR = 2.0**-7
WARMUP = 10
WEIGHT_DECAY = 0.1


def _float64():
    if keras.backend.backend() != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


DTYPE = "float64" if _float64() else "float32"
# Max |keras - reference| / max(1, |reference|) over every weight and step.
# Float64 differences are rounding (different but equivalent orders of
# operations); float32 ones grow with the steps.
TOL = {"float64": 1e-11, "float32": 1e-5}[DTYPE]
# Prodigy's D (relative): it grows 1e5-fold, which amplifies float32's
# rounding.
TOL_D = {"float64": 1e-11, "float32": 1e-3}[DTYPE]


class Quadratic:
    """0.5 * sum(h * (w - target)**2) per variable, with noise: the gradient
    at step t is h * (w - target) + noise[t]; a fixed problem (seed 0)."""

    def __init__(self, noise=0.5):
        rng = np.random.default_rng(0)
        self.init = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        self.h = {k: rng.uniform(0.5, 2.0, size=s) for k, s in SHAPES.items()}
        self.target = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        self.noise = [
            {k: noise * rng.normal(size=s) for k, s in SHAPES.items()}
            for _ in range(STEPS)
        ]

    def grads(self, step, weights):
        return {
            k: self.h[k] * (weights[k] - self.target[k]) + self.noise[step][k]
            for k in SHAPES
        }


class Table(keras.optimizers.schedules.LearningRateSchedule):
    """The LR at step t is `values[t]`, in `DTYPE` (Keras's own schedules
    compute in float32)."""

    def __init__(self, values):
        self.values = values

    def __call__(self, step):
        values = keras.ops.convert_to_tensor(self.values, DTYPE)
        return keras.ops.take(values, step)


def _keras_vars(init):
    return {k: keras.Variable(init[k], dtype=DTYPE, name=k) for k in SHAPES}


def _stepper(optimizer, variables):
    """`grads (dict of float64 arrays) -> None`, one optimizer step."""
    order = list(SHAPES)
    optimizer.build([variables[k] for k in order])
    apply = support.compiled(
        lambda grads: optimizer.apply_gradients(
            zip(grads, [variables[k] for k in order], strict=True)
        )
    )

    def step(grads):
        apply([keras.ops.convert_to_tensor(grads[k], DTYPE) for k in order])

    return step


def _read(variables):
    return {
        k: np.asarray(keras.ops.convert_to_numpy(v), "float64")
        for k, v in variables.items()
    }


def _err(ours, reference):
    return max(
        float(
            np.max(
                np.abs(ours[k] - reference[k])
                / np.maximum(1.0, np.abs(reference[k]))
            )
        )
        for k in SHAPES
    )


def test_schedule_free_matches_schedulefree_step_by_step():
    """y (the model's weights) after every step equals `AdamWScheduleFree`'s
    parameters and `AdamWScheduleFreeReference`'s y; x (after
    `swap_to_eval`) equals the reference's stored x, with warmup and weight
    decay."""
    support.require("schedulefree")
    support.require("torch")
    import schedulefree
    import torch

    problem = Quadratic()
    kwargs = {"lr": LR, "warmup_steps": WARMUP, "weight_decay": WEIGHT_DECAY}
    fast = {
        k: torch.nn.Parameter(torch.tensor(problem.init[k])) for k in SHAPES
    }
    slow = {
        k: torch.nn.Parameter(torch.tensor(problem.init[k])) for k in SHAPES
    }
    fast_opt = schedulefree.AdamWScheduleFree(list(fast.values()), **kwargs)
    slow_opt = schedulefree.AdamWScheduleFreeReference(
        list(slow.values()), **kwargs
    )
    fast_opt.train()
    slow_opt.train()

    variables = _keras_vars(problem.init)
    ours = ScheduleFreeAdamW(
        learning_rate=LR, warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY
    )
    step = _stepper(ours, variables)

    def torch_weights(params):
        return {k: params[k].detach().numpy().copy() for k in SHAPES}

    errors = {"y": [], "y_reference": [], "x_reference": []}
    for t in range(STEPS):
        grads = problem.grads(t, torch_weights(fast))
        for params in (fast, slow):
            for k in SHAPES:
                params[k].grad = torch.tensor(grads[k])
        fast_opt.step()
        slow_opt.step()
        step(grads)
        y = _read(variables)
        errors["y"].append(_err(y, torch_weights(fast)))
        errors["y_reference"].append(
            _err(y, {k: slow_opt.state[slow[k]]["y"].numpy() for k in SHAPES})
        )
        ours.swap_to_eval()
        x = _read(variables)
        ours.swap_to_train()
        errors["x_reference"].append(
            _err(x, {k: slow_opt.state[slow[k]]["x"].numpy() for k in SHAPES})
        )
    for name, errs in errors.items():
        assert max(errs) < TOL, (name, max(errs), int(np.argmax(errs)))
    # The weights moved: a wrong step would show.
    assert _err(y, problem.init) > 0.1
    # x and y differ (the comparison of x is not that of y again).
    assert _err(x, y) > 1e-3
    # The fast reference's own eval() gives our x.
    fast_opt.eval()
    ours.swap_to_eval()
    assert _err(_read(variables), torch_weights(fast)) < TOL
    assert not ours.train_mode


def test_schedule_free_matches_optax_without_warmup():
    """Against `optax.contrib.schedule_free_adamw` (no warmup: with one,
    optax's z step runs one step behind in the warmup, see the class):
    y after every step, and x = `schedule_free_eval_params`."""
    support.require("optax")
    import jax
    import optax

    problem = Quadratic()
    variables = _keras_vars(problem.init)
    ours = ScheduleFreeAdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY)
    step = _stepper(ours, variables)
    with jax.enable_x64(DTYPE == "float64"):
        reference = optax.contrib.schedule_free_adamw(
            LR, weight_decay=WEIGHT_DECAY
        )
        params = {k: jax.numpy.asarray(problem.init[k], DTYPE) for k in SHAPES}
        state = reference.init(params)
        update = jax.jit(reference.update)
        y_errs, x_errs = [], []
        for t in range(STEPS):
            grads = problem.grads(t, {k: np.asarray(params[k]) for k in SHAPES})
            jgrads = {k: jax.numpy.asarray(grads[k], DTYPE) for k in SHAPES}
            updates, state = update(jgrads, state, params)
            params = optax.apply_updates(params, updates)
            eval_params = optax.contrib.schedule_free_eval_params(state, params)
            step(grads)
            y_errs.append(_err(_read(variables), params))
            ours.swap_to_eval()
            x_errs.append(_err(_read(variables), eval_params))
            ours.swap_to_train()
    assert max(y_errs) < TOL and max(x_errs) < TOL, (max(y_errs), max(x_errs))


@pytest.mark.parametrize(
    "use_bias_correction, safeguard_warmup",
    [(False, False), (True, False), (False, True)],
)
def test_prodigy_matches_optax_step_by_step(
    use_bias_correction, safeguard_warmup
):
    """Weights and D after every step equal `optax.contrib.prodigy`'s, on a
    cosine schedule. Optax always applies Adam's bias correction `bc` to
    the step size; without it (prodigyopt's default) the reference gets the
    schedule divided by `bc`, which cancels it exactly."""
    support.require("optax")
    import jax
    import optax

    problem = Quadratic(noise=0.1)
    variables = _keras_vars(problem.init)
    cosine = 0.5 * (1.0 + np.cos(np.pi * np.arange(STEPS) / STEPS))
    ours = Prodigy(
        learning_rate=Table(cosine),
        weight_decay=WEIGHT_DECAY,
        use_bias_correction=use_bias_correction,
        safeguard_warmup=safeguard_warmup,
    )
    step = _stepper(ours, variables)
    with jax.enable_x64(DTYPE == "float64"):
        jnp = jax.numpy
        table = jnp.asarray(cosine, DTYPE)

        def schedule(count):
            if use_bias_correction:
                return table[count]
            t = count + 1
            return table[count] * (1 - 0.9**t) / jnp.sqrt(1 - 0.999**t)

        reference = optax.contrib.prodigy(
            schedule,
            weight_decay=WEIGHT_DECAY,
            safeguard_warmup=safeguard_warmup,
        )
        params = {k: jnp.asarray(problem.init[k], DTYPE) for k in SHAPES}
        state = reference.init(params)
        update = jax.jit(reference.update)
        errs, d_errs = [], []
        for t in range(STEPS):
            grads = problem.grads(t, {k: np.asarray(params[k]) for k in SHAPES})
            jgrads = {k: jnp.asarray(grads[k], DTYPE) for k in SHAPES}
            updates, state = update(jgrads, state, params)
            params = optax.apply_updates(params, updates)
            step(grads)
            errs.append(_err(_read(variables), params))
            d = float(keras.ops.convert_to_numpy(ours.d))
            d_errs.append(
                abs(d - float(state.estim_lr)) / float(state.estim_lr)
            )
    assert max(errs) < TOL and max(d_errs) < TOL_D, (max(errs), max(d_errs))
    # D grew from d0 by orders of magnitude: its estimate was exercised.
    assert float(state.estim_lr) > 1e3 * 1e-6
    assert _err(_read(variables), problem.init) > 0.1


def _fit_digits(optimizer, callbacks, epochs):
    x, y = support.digits()
    model = support.digits_mlp(optimizer=optimizer)
    history = model.fit(
        x[:768],
        y[:768],
        validation_data=(x[768:], y[768:]),
        batch_size=64,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model, history.history, (x[768:], y[768:])


def test_schedule_free_fit_digits_evaluates_at_x():
    """In `fit` with `ScheduleFreeEval`: the loss falls from ln 10 in the
    first epoch; validation runs at x and the model holds x after `fit`
    (the validation loss of the last epoch is what `evaluate` gives after
    `fit`, and y's loss differs)."""
    epochs = 6
    total_steps = epochs * 12
    optimizer, callbacks = PEERS["schedulefree_reference"](total_steps)
    assert optimizer.warmup_steps == round(0.02 * total_steps)
    model, history, (x_val, y_val) = _fit_digits(optimizer, callbacks, epochs)
    # Mean loss per epoch 2.23 .. 1.02 (Keras 3.15's ScheduleFreeAdamW:
    # 2.30 .. 1.86; Adam(): 2.28 .. 1.40).
    assert history["loss"][-1] < 1.2
    assert history["loss"][-1] < 0.55 * history["loss"][0]
    assert not optimizer.train_mode
    at_x = model.evaluate(x_val, y_val, verbose=0)
    assert at_x == pytest.approx(history["val_loss"][-1], rel=1e-5)
    optimizer.swap_to_train()
    at_y = model.evaluate(x_val, y_val, verbose=0)
    assert abs(at_y - at_x) > 1e-3
    # A second `fit` starts again from y and leaves x.
    optimizer.swap_to_eval()
    model.fit(x_val, y_val, epochs=1, verbose=0, callbacks=callbacks)
    assert not optimizer.train_mode


def test_prodigy_cosine_fit_digits():
    """In `fit`: D grows from 1e-6 and the loss falls."""
    epochs = 6
    optimizer, callbacks = PEERS["prodigy_cosine"](epochs * 12)
    _, history, _ = _fit_digits(optimizer, callbacks, epochs)
    # D: 1e-6 -> 0.02; mean loss per epoch 2.34 .. 0.10.
    assert float(keras.ops.convert_to_numpy(optimizer.d)) > 1e-3
    assert history["loss"][-1] < 0.2
    assert history["val_loss"][-1] < 0.35


def test_batchnorm_recalibration_is_the_mean_of_batch_statistics():
    """`recalibrate_batchnorm` sets the moving mean and variance to the
    mean of the batches' statistics; `ScheduleFreeEval` restores y's
    statistics when it swaps back to y."""
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1.0 + i, size=(32, 3)) for i in range(4)]
    batches = [b.astype("float32") for b in batches]
    layer = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((3,)), layer])
    recalibrate_batchnorm(model, batches)
    mean = np.mean([b.mean(axis=0) for b in batches], axis=0)
    var = np.mean([b.var(axis=0) for b in batches], axis=0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.moving_variance), var, rtol=1e-4
    )
    assert layer.momentum == 0.99

    dense = keras.layers.Dense(3)
    model = keras.Sequential(
        [keras.Input((3,)), dense, keras.layers.BatchNormalization()]
    )
    model.compile(optimizer=ScheduleFreeAdamW(), loss="mse")
    callback = ScheduleFreeEval(batchnorm_batches=batches)
    model.fit(batches[0], batches[0], epochs=2, verbose=0)
    bn = model.layers[-1]
    at_y = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    callback.set_model(model)
    callback.on_test_begin()
    assert not model.optimizer.train_mode
    assert (
        np.abs(keras.ops.convert_to_numpy(bn.moving_mean) - at_y).max() > 1e-2
    )
    callback.on_test_end()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_mean), at_y
    )


@pytest.mark.parametrize(
    "make, name, value",
    [
        (ScheduleFreeAdamW, "beta_1", 0.0),
        (ScheduleFreeAdamW, "beta_1", 1.0),
        (ScheduleFreeAdamW, "warmup_steps", -1),
        (ScheduleFreeAdamW, "weight_lr_power", -1.0),
        (ScheduleFreeAdamW, "use_ema", True),
        (Prodigy, "d0", 0.0),
        (Prodigy, "d_coef", -1.0),
        (Prodigy, "beta_3", 1.0),
        (Prodigy, "use_bias_correction", "yes"),
        (Prodigy, "gradient_accumulation_steps", 2),
        (prodigy_cosine, "total_steps", 0),
    ],
)
def test_invalid_arguments_raise(make, name, value):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        make(**{name: value})


@pytest.mark.parametrize("cls", [ScheduleFreeAdamW, Prodigy])
def test_config_round_trip(cls):
    optimizer = cls(beta_2=0.99, weight_decay=0.01)
    config = optimizer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
