"""Prodigy (Mishchenko and Defazio, 2024): AdamW whose step size D is
estimated from the distance travelled.

A Keras 3 port of `optax.contrib.prodigy` (optax 0.2.8) with the defaults
of the authors' package (`prodigyopt` 1.1.2, konstmish/prodigy);
`tests/test_peer_optimizers.py` checks it step by step against optax.
"""

import keras
from keras import ops

from benchmarks.peers._ops import (
    bias_correction,
    constant,
    from_first_step,
    maximum,
    refuse_options,
    safe_divide,
    scalar_dtype,
)
from keras_autolr.core.checks import check_float, check_int


@keras.saving.register_keras_serializable(package="benchmarks.peers")
class Prodigy(keras.optimizers.Optimizer):
    """Prodigy: Adam with a learned step size `d`.

    With `k` the step (from 0), `g` the gradient, `p0` the initial weights,
    `lr_k` the learning rate (a multiplier, 1 at its peak) and `d` the
    current estimate, each step does, over all variables together:

    ```
    dlr = d * lr_k * bc,  bc = sqrt(1 - beta_2**(k+1)) / (1 - beta_1**(k+1))
                          if use_bias_correction else 1
    m = beta_1 * m + (1 - beta_1) * d * g
    v = beta_2 * v + (1 - beta_2) * (d * g)**2
    s = beta_3 * s + (d / d0) * (d if safeguard_warmup else dlr) * g
    num = beta_3 * num + (d / d0) * dlr * <g, p0 - p>
    d' = max(d, d_coef * num / sum |s|)
    p = p - dlr * weight_decay * p - dlr * m / (sqrt(v) + d' * epsilon)
    ```

    `optax.contrib.prodigy` always applies the bias correction `bc`;
    `prodigyopt` makes it an option, off by default, and so does this
    class. The step is skipped by neither: when every gradient so far is
    0 (`sum |s| = 0`) `d` is kept here (optax gets NaN, `prodigyopt` skips
    the update). Not ported: `prodigyopt`'s `growth_rate` (its default, no
    limit, is what optax and this class do), `decouple=False` (coupled
    decay), `slice_p` and the FSDP reductions. Keras's base weight decay is
    replaced by the decoupled decay above; `exclude_from_weight_decay()`
    works as usual.

    The authors recommend `learning_rate=1.0` with no schedule or a cosine
    annealing to 0 over the run (`prodigy_cosine`).

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or
            a callable that takes no arguments and returns the actual value to
            use. A multiplier of the estimated step size. Defaults to `1.0`.
        beta_1: A float in `[0, 1)`. Defaults to `0.9`.
        beta_2: A float in `[0, 1)`. Defaults to `0.999`.
        beta_3: A float in `[0, 1)`, or `None` for `sqrt(beta_2)`. The decay
            of the sums that estimate `d`. Defaults to `None`.
        epsilon: A float > 0, times `d`, added to the denominator. Defaults
            to `1e-8`.
        weight_decay: A float >= 0 (or `None`, meaning 0). Decoupled (AdamW)
            weight decay, times `dlr`. Defaults to `0.0`.
        d0: A float > 0. The initial estimate of `d`. Defaults to `1e-6`.
        d_coef: A float > 0, multiplying each new estimate of `d`. Defaults
            to `1.0`.
        safeguard_warmup: A bool. Leaves the learning rate out of the
            denominator of `d`'s estimate; the authors advise it with a
            warmup. Defaults to `False`.
        use_bias_correction: A bool. Adam's bias correction in `dlr`.
            Defaults to `False`.
        **kwargs: The other arguments of `keras.optimizers.Optimizer`
            (`clipnorm`, `clipvalue`, `global_clipnorm`, `loss_scale_factor`,
            `name`, ...), except `use_ema` and
            `gradient_accumulation_steps`.

    Example:

    ```python
    model.compile(optimizer=Prodigy(), loss="mse")
    ```

    References:
        - [Mishchenko and Defazio, 2024](https://arxiv.org/abs/2306.06101),
          "Prodigy: An Expeditiously Adaptive Parameter-Free Learner".
        - [konstmish/prodigy](https://github.com/konstmish/prodigy),
          `prodigyopt/prodigy.py`; `optax/contrib/_prodigy.py`.
    """

    def __init__(
        self,
        learning_rate=1.0,
        beta_1=0.9,
        beta_2=0.999,
        beta_3=None,
        epsilon=1e-8,
        weight_decay=0.0,
        d0=1e-6,
        d_coef=1.0,
        safeguard_warmup=False,
        use_bias_correction=False,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        loss_scale_factor=None,
        name="prodigy",
        **kwargs,
    ):
        check_float("beta_1", beta_1, 0.0, 1.0, high_open=True)
        check_float("beta_2", beta_2, 0.0, 1.0, high_open=True)
        if beta_3 is not None:
            check_float("beta_3", beta_3, 0.0, 1.0, high_open=True)
        check_float("epsilon", epsilon, 0.0, low_open=True)
        if weight_decay is None:
            weight_decay = 0.0
        check_float("weight_decay", weight_decay, 0.0)
        check_float("d0", d0, 0.0, low_open=True)
        check_float("d_coef", d_coef, 0.0, low_open=True)
        for flag, value in (
            ("safeguard_warmup", safeguard_warmup),
            ("use_bias_correction", use_bias_correction),
        ):
            if not isinstance(value, bool):
                raise ValueError(
                    f"Argument `{flag}` must be a bool. "
                    f"Received: {flag}={value!r}"
                )
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
        self.beta_3 = beta_3
        self.epsilon = epsilon
        self.d0 = d0
        self.d_coef = d_coef
        self.safeguard_warmup = safeguard_warmup
        self.use_bias_correction = use_bias_correction

    def build(self, var_list):
        """Creates `m`, `v`, `s`, `p0` (the weights at the first step) and
        two scalars: `d` (`d0` at the first step) and the weighted
        numerator."""
        if self.built:
            return
        super().build(var_list)
        self._m, self._v, self._s, self._p0 = self.add_optimizer_variables(
            var_list, ["m", "v", "s", "p0"]
        )
        dtype = scalar_dtype(var_list)
        self._d = self.add_variable((), dtype=dtype, name="d")
        self._numerator = self.add_variable((), dtype=dtype, name="numerator")

    def _apply_weight_decay(self, variables):
        # The decay is part of the step, times dlr (see `_backend_update_step`).
        return

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError(
            "Prodigy updates all variables together, in `_backend_update_step`."
        )

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # D's estimate needs sums over every variable before any moves, so
        # the step runs in two passes instead of one `update_step` each.
        dtype = self._d.dtype
        d = self.d
        beta_3 = self.beta_3
        if beta_3 is None:
            beta_3 = self.beta_2**0.5
        step = ops.cast(self.iterations + 1, dtype)
        dlr = ops.multiply(d, ops.cast(learning_rate, dtype))
        if self.use_bias_correction:
            dlr = ops.multiply(
                dlr,
                ops.divide(
                    ops.sqrt(bias_correction(self.beta_2, step, dtype)),
                    bias_correction(self.beta_1, step, dtype),
                ),
            )
        d_ratio = ops.divide(d, constant(self.d0, dtype))
        s_rate = ops.multiply(d_ratio, d if self.safeguard_warmup else dlr)
        dot = constant(0.0, dtype)
        total_s = constant(0.0, dtype)
        indices = []
        for grad, variable in zip(grads, trainable_variables, strict=True):
            index = self._get_variable_index(variable)
            indices.append(index)
            g = ops.cast(grad, variable.dtype)
            vdtype = variable.dtype
            m, v, s = self._m[index], self._v[index], self._s[index]
            p0 = from_first_step(self, self._p0[index], variable)
            self.assign(self._p0[index], p0)
            diff = ops.subtract(p0, variable)
            dot = ops.add(dot, ops.cast(ops.sum(ops.multiply(g, diff)), dtype))
            dg = ops.multiply(ops.cast(d, vdtype), g)
            self.assign(
                m,
                ops.add(
                    ops.multiply(constant(self.beta_1, vdtype), m),
                    ops.multiply(constant(1 - self.beta_1, vdtype), dg),
                ),
            )
            self.assign(
                v,
                ops.add(
                    ops.multiply(constant(self.beta_2, vdtype), v),
                    ops.multiply(
                        constant(1 - self.beta_2, vdtype), ops.square(dg)
                    ),
                ),
            )
            self.assign(
                s,
                ops.add(
                    ops.multiply(constant(beta_3, vdtype), s),
                    ops.multiply(ops.cast(s_rate, vdtype), g),
                ),
            )
            total_s = ops.add(total_s, ops.cast(ops.sum(ops.abs(s)), dtype))
        numerator = ops.add(
            ops.multiply(constant(beta_3, dtype), self._numerator),
            ops.multiply(ops.multiply(d_ratio, dlr), dot),
        )
        self.assign(self._numerator, numerator)
        estimate = ops.multiply(
            constant(self.d_coef, dtype), safe_divide(numerator, total_s)
        )
        new_d = ops.where(total_s > 0, maximum(d, estimate), d)
        self.assign(self._d, new_d)
        for index, variable in zip(indices, trainable_variables, strict=True):
            vdtype = variable.dtype
            step_size = ops.cast(dlr, vdtype)
            m, v = self._m[index], self._v[index]
            denom = ops.add(
                ops.sqrt(v),
                ops.multiply(
                    ops.cast(new_d, vdtype), constant(self.epsilon, vdtype)
                ),
            )
            update = ops.divide(m, denom)
            if self.weight_decay and self._use_weight_decay(
                self._trainable_variables[index]
            ):
                update = ops.add(
                    update,
                    ops.multiply(constant(self.weight_decay, vdtype), variable),
                )
            self.assign_sub(variable, ops.multiply(step_size, update))

    @property
    def d(self):
        """The current estimate of the step size `d`, a scalar."""
        return from_first_step(self, self._d, constant(self.d0, self._d.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "beta_3": self.beta_3,
                "epsilon": self.epsilon,
                "d0": self.d0,
                "d_coef": self.d_coef,
                "safeguard_warmup": self.safeguard_warmup,
                "use_bias_correction": self.use_bias_correction,
            }
        )
        return config


def prodigy_cosine(total_steps, **kwargs):
    """Prodigy with the schedule its authors recommend: the learning rate
    (a multiplier of `d`) annealed from 1 to 0 by a cosine over the whole
    run, without warmup (PyTorch's `CosineAnnealingLR(opt,
    T_max=total_steps)`, prodigyopt's README; with a warmup they advise
    `safeguard_warmup=True`, which is then the caller's choice).

    Args:
        total_steps: An integer >= 1, the optimizer steps of the run.
        **kwargs: Other `Prodigy` arguments (not `learning_rate`).

    Returns:
        A `Prodigy` optimizer.
    """
    check_int("total_steps", total_steps, 1)
    if "learning_rate" in kwargs:
        raise ValueError(
            "Argument `learning_rate` is set by `prodigy_cosine` (a cosine "
            "from 1 to 0); build `Prodigy` directly for another schedule. "
            f"Received: learning_rate={kwargs['learning_rate']!r}"
        )
    schedule = keras.optimizers.schedules.CosineDecay(1.0, total_steps)
    return Prodigy(learning_rate=schedule, **kwargs)
