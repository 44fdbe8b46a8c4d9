"""Schedule-Free AdamW (Defazio et al., 2024), the authors' algorithm.

A Keras 3 port of `schedulefree.AdamWScheduleFree` (facebookresearch/
schedule_free, PyPI `schedulefree` 1.4.1), which `optax.contrib.
schedule_free_adamw` (optax 0.2.8) also implements; `tests/
test_peer_optimizers.py` checks it step by step against both.
"""

import keras
from keras import ops

from benchmarks.peers._ops import (
    bias_correction,
    constant,
    from_first_step,
    maximum,
    minimum,
    refuse_options,
    safe_divide,
    scalar_dtype,
)
from keras_autolr.core.checks import check_float, check_int


@keras.saving.register_keras_serializable(package="benchmarks.peers")
class ScheduleFreeAdamW(keras.optimizers.Optimizer):
    """Schedule-Free AdamW as its authors implement it.

    Three sequences: `z` takes AdamW steps (without momentum), `x` is their
    weighted average and the point to evaluate, and the gradient is taken
    at their interpolation `y = beta_1 * x + (1 - beta_1) * z`. With `k`
    the step (from 0) and `g` the gradient at `y`:

    ```
    lr_k = learning_rate * min((k + 1) / warmup_steps, 1)
    v = beta_2 * v + (1 - beta_2) * g**2
    u = g / (sqrt(v / (1 - beta_2**(k + 1))) + epsilon) + weight_decay * y
    z = z - lr_k * u
    c = max_lr**weight_lr_power / sum over steps of max_lr**weight_lr_power
    x = (1 - c) * x + c * z
    ```

    where `max_lr` is the largest `lr_k` so far, so the average gives the
    warmup's small steps little weight. Weight decay is taken at `y`, as
    `schedulefree` 1.3+ does.

    **Which point the model holds.** As in the reference, the model's
    variables hold `y` during training, and the optimizer keeps `z` (and
    `v`); `x = (y - (1 - beta_1) * z) / beta_1` is not stored. Evaluate at
    `x`: `swap_to_eval()` writes `x` into the variables and `swap_to_train()`
    writes `y` back (the reference's `optimizer.eval()` / `train()`).
    `ScheduleFreeEval`, a callback, does it around every evaluation in `fit`
    and leaves `x` in the model at the end of `fit`. Training steps taken
    while the model holds `x` are wrong, and compiled train steps cannot
    check it: call `swap_to_train()` (or pass the callback) before training
    again. A checkpoint saved during `fit` holds `y`.

    **Differences from the reference.** Keras's base `weight_decay` is not
    applied outside the update; `exclude_from_weight_decay()` works as
    usual. `r` (polynomial weighting of the average, 0 by default in the
    reference) is not offered: `k**r = 1`. `use_ema` and
    `gradient_accumulation_steps` are refused (the step count would be of
    micro-batches). `optax.contrib.schedule_free_adamw` with `warmup_steps`
    differs from this class and from `schedulefree` by one step in the
    warmup of the `z` step (its inner schedule counts from 0, its weights
    from 1); without warmup the three agree.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or
            a callable that takes no arguments and returns the actual value to
            use. The peak learning rate, multiplied by the warmup. Defaults to
            `0.0025`, the reference's.
        beta_1: A float in `(0, 1)`. The interpolation weight of `x` in `y`.
            Defaults to `0.9`.
        beta_2: A float in `[0, 1)`. The decay rate of the second moment.
            Defaults to `0.999`.
        epsilon: A float >= 0, added to the denominator outside the square
            root. Defaults to `1e-8`.
        weight_decay: A float >= 0 (or `None`, meaning 0). The decay,
            `lr * weight_decay * y`, added to the `z` step. Defaults to `0.0`.
        warmup_steps: An integer >= 0. The steps of the linear warmup from
            `learning_rate / warmup_steps`; 0 for none. Defaults to `0`, the
            reference's (its README recommends a warmup without giving a
            length).
        weight_lr_power: A float >= 0. The weight of a step in the average
            is `max_lr**weight_lr_power`. Defaults to `2.0`.
        **kwargs: The other arguments of `keras.optimizers.Optimizer`
            (`clipnorm`, `clipvalue`, `global_clipnorm`, `loss_scale_factor`,
            `name`, ...), except `use_ema` and
            `gradient_accumulation_steps`.

    Example:

    ```python
    optimizer = ScheduleFreeAdamW(warmup_steps=100)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, validation_split=0.1, callbacks=[ScheduleFreeEval()])
    model.evaluate(x_test, y_test)  # The model holds x after fit.
    ```

    References:
        - [Defazio et al., 2024](https://arxiv.org/abs/2405.15682), "The
          Road Less Scheduled".
        - [facebookresearch/schedule_free](
          https://github.com/facebookresearch/schedule_free),
          `schedulefree/adamw_schedulefree.py`.
    """

    def __init__(
        self,
        learning_rate=0.0025,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=0.0,
        warmup_steps=0,
        weight_lr_power=2.0,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        loss_scale_factor=None,
        name="schedule_free_adamw",
        **kwargs,
    ):
        check_float("beta_1", beta_1, 0.0, 1.0, low_open=True, high_open=True)
        check_float("beta_2", beta_2, 0.0, 1.0, high_open=True)
        check_float("epsilon", epsilon, 0.0)
        if weight_decay is None:
            weight_decay = 0.0
        check_float("weight_decay", weight_decay, 0.0)
        check_int("warmup_steps", warmup_steps, 0)
        check_float("weight_lr_power", weight_lr_power, 0.0)
        refuse_options(kwargs)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            loss_scale_factor=loss_scale_factor,
            name=name,
            **kwargs,
        )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.warmup_steps = warmup_steps
        self.weight_lr_power = weight_lr_power
        self._train_mode = True

    @property
    def train_mode(self):
        """Whether the model's variables hold `y` (else `x`)."""
        return self._train_mode

    def build(self, var_list):
        """Creates `z` (the weights at the first step), `v`, and two
        scalars: the largest LR so far and the sum of the averaging
        weights."""
        if self.built:
            return
        super().build(var_list)
        self._z, self._v = self.add_optimizer_variables(var_list, ["z", "v"])
        dtype = scalar_dtype(var_list)
        self._max_lr = self.add_variable((), dtype=dtype, name="max_lr")
        self._weight_sum = self.add_variable((), dtype=dtype, name="weight_sum")

    def _apply_weight_decay(self, variables):
        # The decay is part of the z step, at y (see `update_step`).
        return

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Once per step, before the variables: the warmed-up LR, the largest
        # LR so far and the sum of the averaging weights.
        dtype = self._max_lr.dtype
        lr = ops.cast(learning_rate, dtype)
        if self.warmup_steps > 0:
            k = ops.cast(self.iterations, dtype)
            one = constant(1.0, dtype)
            ramp = ops.divide(
                ops.add(k, one), constant(self.warmup_steps, dtype)
            )
            lr = ops.multiply(lr, minimum(ramp, one))
        max_lr = maximum(ops.convert_to_tensor(self._max_lr), lr)
        self.assign(self._max_lr, max_lr)
        self.assign_add(self._weight_sum, self._weight(max_lr))
        super()._backend_update_step(grads, trainable_variables, lr)

    def _weight(self, max_lr):
        """A step's weight in the average of x."""
        power = constant(self.weight_lr_power, self._max_lr.dtype)
        return ops.power(max_lr, power)

    def update_step(self, gradient, variable, learning_rate):
        """The z step and the new y, given the gradient at y (`variable`)
        and the warmed-up LR."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        z = from_first_step(self, self._z[index], variable)
        v = self._v[index]
        # c = weight / weight_sum, this step's included (0 while both are 0).
        c = ops.cast(
            safe_divide(
                self._weight(ops.convert_to_tensor(self._max_lr)),
                ops.convert_to_tensor(self._weight_sum),
            ),
            dtype,
        )
        step = ops.cast(self.iterations + 1, dtype)
        self.assign_add(
            v,
            ops.multiply(
                ops.subtract(ops.square(gradient), v),
                constant(1 - self.beta_2, dtype),
            ),
        )
        denom = ops.add(
            ops.sqrt(ops.divide(v, bias_correction(self.beta_2, step, dtype))),
            constant(self.epsilon, dtype),
        )
        update = ops.divide(gradient, denom)
        if self.weight_decay and self._use_weight_decay(
            self._trainable_variables[index]
        ):
            update = ops.add(
                update,
                ops.multiply(constant(self.weight_decay, dtype), variable),
            )
        # y' = b1 x' + (1 - b1) z' with x' = (1 - c) x + c z', z' = z - lr u,
        # written, as the reference does, without x:
        # y' = lerp(y, z, c) + lr (b1 (1 - c) - 1) u.
        beta_1 = constant(self.beta_1, dtype)
        one = constant(1.0, dtype)
        y = ops.add(variable, ops.multiply(c, ops.subtract(z, variable)))
        coef = ops.multiply(
            lr, ops.subtract(ops.multiply(beta_1, ops.subtract(one, c)), one)
        )
        self.assign(variable, ops.add(y, ops.multiply(coef, update)))
        self.assign(self._z[index], ops.subtract(z, ops.multiply(lr, update)))

    def swap_to_eval(self, variables=None):
        """Writes `x` into the model's variables; a no-op if they hold `x`.

        Args:
            variables: The model variables the optimizer trains (a subset is
                fine), or `None` for all of them. Defaults to `None`.
        """
        if not self._train_mode:
            return
        # x = (y - (1 - b1) z) / b1 = lerp(y, z, 1 - 1 / b1).
        self._lerp_to_z(variables, 1.0 - 1.0 / self.beta_1)
        self._train_mode = False

    def swap_to_train(self, variables=None):
        """Writes `y` back into the model's variables; a no-op if they hold
        `y`. `variables` as in `swap_to_eval`."""
        if self._train_mode:
            return
        # y = b1 x + (1 - b1) z = lerp(x, z, 1 - b1).
        self._lerp_to_z(variables, 1.0 - self.beta_1)
        self._train_mode = True

    def _lerp_to_z(self, variables, weight):
        if not self.built or int(ops.convert_to_numpy(self.iterations)) == 0:
            return  # x = y = z before the first step.
        if variables is None:
            variables = self._trainable_variables
        for variable in variables:
            z = self._z[self._get_variable_index(variable)]
            if z is None:
                continue
            w = constant(weight, variable.dtype)
            variable.assign(
                ops.add(variable, ops.multiply(w, ops.subtract(z, variable)))
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "warmup_steps": self.warmup_steps,
                "weight_lr_power": self.weight_lr_power,
            }
        )
        return config


class ScheduleFreeEval(keras.callbacks.Callback):
    """Evaluates a `ScheduleFreeAdamW` model at `x`, as the reference asks.

    Swaps the model's variables to `x` before each evaluation (the
    validation of `fit`, or `evaluate`), back to `y` after an evaluation
    that interrupted training, to `y` when training begins and to `x` when
    it ends, so the model holds `x` after `fit`.

    BatchNormalization: the moving statistics were accumulated at `y`. The
    reference's README re-estimates them at `x` from about 50 training
    batches before evaluating. Pass those batches as `batchnorm_batches`
    (a list of model inputs) to do the same: the statistics become the
    plain mean over those batches of each batch's statistics at `x`, and
    the training statistics come back with `y`. Without them the statistics
    of `y` are used at `x`, which is right only for models without
    BatchNormalization.

    Args:
        batchnorm_batches: A list of input batches (a NumPy array or tensor
            each), or `None`. Defaults to `None`.
    """

    def __init__(self, batchnorm_batches=None):
        super().__init__()
        if batchnorm_batches is not None and len(batchnorm_batches) == 0:
            raise ValueError(
                "Argument `batchnorm_batches` must be a non-empty list of "
                "input batches, or None. Received: batchnorm_batches=[]"
            )
        self.batchnorm_batches = batchnorm_batches
        self._resume_training = False
        self._saved_stats = None

    def _optimizer(self):
        optimizer = self.model.optimizer
        if not isinstance(optimizer, ScheduleFreeAdamW):
            raise ValueError(
                "`ScheduleFreeEval` needs a model compiled with "
                "`ScheduleFreeAdamW`. Received: optimizer="
                f"{type(optimizer).__name__}"
            )
        return optimizer

    def _to_x(self):
        optimizer = self._optimizer()
        if not optimizer.train_mode:
            return
        optimizer.swap_to_eval(self.model.trainable_variables)
        if self.batchnorm_batches is not None:
            self._saved_stats = _batchnorm_stats(self.model)
            recalibrate_batchnorm(self.model, self.batchnorm_batches)

    def _to_y(self):
        optimizer = self._optimizer()
        if optimizer.train_mode:
            return
        optimizer.swap_to_train(self.model.trainable_variables)
        if self._saved_stats is not None:
            for variable, value in self._saved_stats:
                variable.assign(value)
            self._saved_stats = None

    def on_train_begin(self, logs=None):
        self._to_y()

    def on_test_begin(self, logs=None):
        self._resume_training = self._optimizer().train_mode
        self._to_x()

    def on_test_end(self, logs=None):
        if self._resume_training:
            self._to_y()
        self._resume_training = False

    def on_train_end(self, logs=None):
        self._to_x()


def recalibrate_batchnorm(model, batches):
    """Sets every BatchNormalization layer's moving mean and variance to
    the mean over `batches` of the statistics of each batch, computed with
    the model's current weights (forward passes in training mode)."""
    layers = _batchnorm_layers(model)
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    try:
        for i, batch in enumerate(batches):
            # moving = m * moving + (1 - m) * batch with m = i / (i + 1):
            # the running mean of the batch statistics.
            for layer in layers:
                layer.momentum = i / (i + 1)
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def _batchnorm_layers(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def _batchnorm_stats(model):
    stats = []
    for layer in _batchnorm_layers(model):
        for variable in (layer.moving_mean, layer.moving_variance):
            stats.append((variable, ops.copy(variable.value)))
    return stats
