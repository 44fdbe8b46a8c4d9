"""LAMB with layer-adaptation exclusion and in-update weight decay."""

import re

import keras
from keras import ops

from keras_autolr.core.checks import check_float
from keras_autolr.optimizers._common import (
    bias_correction,
    constant,
    fill_base_kwargs_doc,
)


def _patterns(name, value):
    """Normalises a pattern argument to a tuple of strings (or `None`)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(p, str) for p in value
    ):
        raise ValueError(
            f"Argument `{name}` must be a list of strings (regular "
            f"expressions). Received: {name}={value!r}"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(
                f"Argument `{name}` contains an invalid regular expression "
                f"{pattern!r} ({e}). Received: {name}={value!r}"
            ) from e
    return tuple(value)


def _matches(patterns, variable):
    """Whether any pattern is found in the variable's path or name."""
    if not patterns:
        return False
    names = (getattr(variable, "path", None) or "", variable.name)
    return any(re.search(p, n) for p in patterns for n in names)


@keras.saving.register_keras_serializable(package="keras_autolr")
@fill_base_kwargs_doc
class LAMB(keras.optimizers.Lamb):
    """LAMB optimizer with the behaviour of `tfa.optimizers.LAMB`.

    Layer-wise Adaptive Moments (LAMB) scales the Adam update of every
    variable by the trust ratio `||w|| / ||update||`. This class differs from
    `keras.optimizers.Lamb` in two ways, both following the LAMB paper and
    TensorFlow Addons:

    - Weight decay is part of the update, before the trust ratio:
      `update = m_hat / (sqrt(v_hat) + epsilon) + weight_decay * w` and
      `w -= lr * ||w|| / ||update|| * update`. (`keras.optimizers.Lamb`
      instead applies the base class's decoupled decay `w -= lr * wd * w`
      outside the trust ratio.)
    - `exclude_from_layer_adaptation`: variables matching these patterns
      (typically biases and normalisation weights) skip the trust ratio
      (ratio 1). `keras.optimizers.Lamb` has no such option.

    The trust ratio is 1 when `||w||` or `||update||` is 0.

    Migrating from `tfa.optimizers.LAMB`: the arguments keep their meaning.
    `weight_decay_rate` (old Addons releases) is now `weight_decay`. Patterns
    are regular expressions searched (`re.search`) in the variable path (e.g.
    `"model/dense_1/bias"`) and in its name (`"bias"`). Addons matched the
    `tf.Variable` name without its `:0` suffix, which is the Keras 3 path, so
    patterns such as `"bias"` or `"layer_norm"` keep working as long as the
    layer names are the same. As in Addons, when
    `exclude_from_layer_adaptation` is `None` it defaults to
    `exclude_from_weight_decay`. The default `epsilon` is Addons' `1e-6`
    (`keras.optimizers.Lamb` uses `1e-7`). Serialized Addons optimizers
    (`"Addons>LAMB"`) are not converted: build a new `LAMB` with the same
    arguments.

    ```python
    # Before (TensorFlow Addons, Keras 2):
    opt = tfa.optimizers.LAMB(
        learning_rate=1e-3,
        weight_decay=0.01,
        exclude_from_weight_decay=["bias", "LayerNorm", "layer_norm"],
    )
    # After (Keras 3):
    opt = keras_autolr.optimizers.LAMB(
        learning_rate=1e-3,
        weight_decay=0.01,
        exclude_from_weight_decay=["bias", "LayerNorm", "layer_norm"],
    )
    ```

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or
            a callable that takes no arguments and returns the actual value to
            use. The learning rate. Defaults to `0.001`.
        beta_1: A float value. The exponential decay rate for the 1st moment
            estimates. Defaults to `0.9`.
        beta_2: A float value. The exponential decay rate for the 2nd moment
            estimates. Defaults to `0.999`.
        epsilon: A small constant for numerical stability. Defaults to `1e-6`.
        weight_decay: A float value. The weight decay coefficient, added to
            the update before the trust ratio; `0` (or `None`) turns it off.
            Defaults to `0.0`.
        exclude_from_weight_decay: A list of regular expressions, or `None`.
            Variables whose path or name contains a match are not decayed.
            The base-class method `exclude_from_weight_decay()` also works.
            Defaults to `None`.
        exclude_from_layer_adaptation: A list of regular expressions, or
            `None`. Variables whose path or name contains a match skip the
            trust ratio. If `None`, `exclude_from_weight_decay` is used.
            Defaults to `None`.
        {{base_optimizer_keyword_args}}

    Example:

    ```python
    opt = keras_autolr.optimizers.LAMB(
        learning_rate=1e-3,
        weight_decay=0.01,
        exclude_from_weight_decay=["bias", "normalization"],
    )
    model.compile(optimizer=opt, loss="mse")
    ```

    References:
        - [You et al., 2020](https://arxiv.org/abs/1904.00962) (ICLR 2020),
          "Large Batch Optimization for Deep Learning: Training BERT in 76
          minutes".
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        check_float("beta_1", beta_1, 0.0, 1.0, high_open=True)
        check_float("beta_2", beta_2, 0.0, 1.0, high_open=True)
        check_float("epsilon", epsilon, 0.0)
        if weight_decay is None:
            weight_decay = 0.0
        check_float("weight_decay", weight_decay, 0.0)
        wd_patterns = _patterns(
            "exclude_from_weight_decay", exclude_from_weight_decay
        )
        la_patterns = _patterns(
            "exclude_from_layer_adaptation", exclude_from_layer_adaptation
        )
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        # Not named `exclude_from_weight_decay`: that is a base-class method.
        self._wd_exclude = wd_patterns
        self._la_exclude = la_patterns

    def _apply_weight_decay(self, variables):
        # The decay is added to the update inside `update_step`; the base
        # class must not apply its own decoupled decay as well.
        return

    def _model_variable(self, variable):
        # In `update_step` the TensorFlow backend passes the backend variable
        # (a `tf.Variable`, per replica under a distribution strategy); map it
        # back to the `keras.Variable`, whose `path` the patterns refer to.
        return self._trainable_variables[self._get_variable_index(variable)]

    def _decays(self, variable):
        if not self.weight_decay:
            return False
        if not self._use_weight_decay(variable):
            return False
        return not _matches(self._wd_exclude, self._model_variable(variable))

    def _adapts(self, variable):
        patterns = self._la_exclude
        if patterns is None:
            patterns = self._wd_exclude
        return not _matches(patterns, self._model_variable(variable))

    def update_step(self, gradient, variable, learning_rate):
        """Update step given gradient and the associated model variable."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        # Python floats go through `convert_to_tensor(..., dtype)`: `cast`
        # would round them to float32 first (0.9 -> 0.89999998 in float64).
        bias_correction_1 = bias_correction(self.beta_1, local_step, dtype)
        bias_correction_2 = bias_correction(self.beta_2, local_step, dtype)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(
            m,
            ops.multiply(
                ops.subtract(gradient, m), constant(1 - self.beta_1, dtype)
            ),
        )
        self.assign_add(
            v,
            ops.multiply(
                ops.subtract(ops.square(gradient), v),
                constant(1 - self.beta_2, dtype),
            ),
        )

        m_hat = ops.divide(m, bias_correction_1)
        v_hat = ops.divide(v, bias_correction_2)
        update = ops.divide(
            m_hat, ops.add(ops.sqrt(v_hat), constant(self.epsilon, dtype))
        )
        if self._decays(variable):
            update = ops.add(
                update,
                ops.multiply(constant(self.weight_decay, dtype), variable),
            )

        if self._adapts(variable):
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            one = constant(1.0, dtype)
            ratio = ops.where(
                ops.greater(w_norm, 0),
                ops.where(
                    ops.greater(u_norm, 0), ops.divide(w_norm, u_norm), one
                ),
                one,
            )
            lr = ops.multiply(ratio, lr)
        self.assign_sub(variable, ops.multiply(lr, update))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "exclude_from_weight_decay": (
                    None if self._wd_exclude is None else list(self._wd_exclude)
                ),
                "exclude_from_layer_adaptation": (
                    None if self._la_exclude is None else list(self._la_exclude)
                ),
            }
        )
        return config
