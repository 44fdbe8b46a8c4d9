"""AdamP optimizer for Keras 3 (backend-agnostic, `keras.ops` only)."""

import math

import keras
from keras import ops

from keras_autolr.core.checks import check_bool, check_float
from keras_autolr.optimizers._common import (
    bias_correction,
    constant,
    fill_base_kwargs_doc,
)


@keras.saving.register_keras_serializable(package="keras_autolr")
@fill_base_kwargs_doc
class AdamP(keras.optimizers.Optimizer):
    """Optimizer that implements the AdamP algorithm.

    AdamP is Adam with decoupled weight decay and a projection that keeps
    scale-invariant weights (those followed by a normalisation layer) from
    growing their norm: when the gradient of a weight is nearly orthogonal to
    the weight, the radial component of the Adam update is removed and the
    weight decay is scaled down by `wd_ratio`. The rule follows the reference
    PyTorch implementation (`clovaai/AdamP`) step for step:

    1. Adam moments `m`, `v` with bias correction; the update direction is
       `perturb = m / (sqrt(v) / sqrt(1 - beta_2**t) + epsilon)` (with
       `nesterov=True`, `m` is replaced by `beta_1 * m + (1 - beta_1) * g`).
    2. For weights with more than one dimension, the cosine similarity
       between gradient and weight is computed per output channel (all axes
       except the last one, which is the output axis of Keras `Dense` and
       convolution kernels), then for the whole layer. If, for the first view
       that qualifies, `max |cos| < delta / sqrt(view_size)`, the radial
       component of `perturb` along the weight is removed in that view and the
       weight decay is multiplied by `wd_ratio`.
    3. Decoupled weight decay `w *= 1 - lr * weight_decay * ratio` (`ratio`
       is `wd_ratio` if projected, else 1), applied before the step.
    4. `w -= lr / (1 - beta_1**t) * perturb`.

    The decay is applied inside the update step (the base class's own
    decoupled decay is turned off), so `exclude_from_weight_decay()` works as
    usual and excluded variables are not decayed.

    "Output channel" is always the last axis. That matches PyTorch's first
    axis for `Dense`, `Conv*D`, `Conv*DTranspose` (whose Keras kernel ends
    with the input channels, like PyTorch's first axis) and RNN kernels. It
    differs for `Embedding` (Keras: per embedding dimension; PyTorch: per
    token), `DepthwiseConv*D` (per depth multiplier) and `EinsumDense`
    kernels with several output axes (per last output axis only).

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or
            a callable that takes no arguments and returns the actual value to
            use. The learning rate. Defaults to `0.001`.
        beta_1: A float value. The exponential decay rate for the 1st moment
            estimates. Defaults to `0.9`.
        beta_2: A float value. The exponential decay rate for the 2nd moment
            estimates. Defaults to `0.999`.
        epsilon: A small float added to the denominator of the update and used
            as the norm floor in the cosine similarity and the projection, as
            in the reference implementation. Defaults to `1e-8`.
        weight_decay: A float value. The decoupled weight decay coefficient;
            `0` (or `None`) turns weight decay off. Defaults to `0.0`.
        delta: A float value. The threshold on the cosine similarity between
            gradient and weight below which the projection is applied; it is
            divided by the square root of the view size. `0` turns the
            projection off (the optimizer is then AdamW with the reference's
            epsilon placement). Defaults to `0.1`.
        wd_ratio: A float value. The factor applied to the weight decay of
            weights whose update was projected. Defaults to `0.1`.
        nesterov: Boolean. Whether to use Nesterov momentum for the update
            direction. Defaults to `False`.
        {{base_optimizer_keyword_args}}

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    opt = keras_autolr.optimizers.AdamP(learning_rate=1e-3, weight_decay=1e-2)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=opt, loss="mse")
    ```

    References:
        - [Heo et al., 2021](https://arxiv.org/abs/2006.08217) (ICLR 2021),
          "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
          Scale-invariant Weights".
        - [Reference implementation](https://github.com/clovaai/AdamP).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=0.0,
        delta=0.1,
        wd_ratio=0.1,
        nesterov=False,
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
        if isinstance(learning_rate, int | float):
            check_float("learning_rate", learning_rate, 0.0)
        check_float("beta_1", beta_1, 0.0, 1.0, high_open=True)
        check_float("beta_2", beta_2, 0.0, 1.0, high_open=True)
        check_float("epsilon", epsilon, 0.0, low_open=True)
        if weight_decay is None:
            weight_decay = 0.0
        check_float("weight_decay", weight_decay, 0.0)
        check_float("delta", delta, 0.0)
        check_float("wd_ratio", wd_ratio, 0.0)
        check_bool("nesterov", nesterov)
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.delta = delta
        self.wd_ratio = wd_ratio
        self.nesterov = nesterov

    def build(self, var_list):
        """Initialize optimizer variables.

        AdamP has 2 types of variables: momentums and velocities.

        Args:
            var_list: list of model variables to build AdamP variables on.
        """
        if self.built:
            return
        super().build(var_list)
        self._momentums = []
        self._velocities = []
        for var in var_list:
            self._momentums.append(
                self.add_variable_from_reference(var, name="momentum")
            )
            self._velocities.append(
                self.add_variable_from_reference(var, name="velocity")
            )

    def _apply_weight_decay(self, variables):
        # AdamP scales the decay of each variable by `wd_ratio` when its
        # update is projected, so the decay is applied in `update_step`; the
        # base class must not apply its own (unscaled) decoupled decay too.
        return

    def _cosine_similarity(self, x, y, axes, eps):
        """`|cos(x, y)|` over `axes`, as `torch.nn.functional` computes it.

        Each operand is divided by `max(norm, eps)` before the dot product.
        """
        x_norm = ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True))
        y_norm = ops.sqrt(ops.sum(ops.square(y), axis=axes, keepdims=True))
        x = ops.divide(x, ops.maximum(x_norm, eps))
        y = ops.divide(y, ops.maximum(y_norm, eps))
        return ops.abs(ops.sum(ops.multiply(x, y), axis=axes))

    def _project(self, weight, perturb, axes, eps):
        """Removes the component of `perturb` along `weight` over `axes`."""
        w_norm = ops.sqrt(ops.sum(ops.square(weight), axis=axes, keepdims=True))
        w_unit = ops.divide(weight, ops.add(w_norm, eps))
        radial = ops.sum(
            ops.multiply(w_unit, perturb), axis=axes, keepdims=True
        )
        return ops.subtract(perturb, ops.multiply(w_unit, radial))

    def _projection(self, weight, gradient, perturb, eps):
        """Returns the (possibly) projected `perturb` and the decay ratio.

        The channel view (one row per output unit, i.e. per index of the last
        axis) is tried first, then the layer view, as in the reference. Both
        are computed and selected with `ops.where`, so that the step traces
        into a single graph.
        """
        dtype = weight.dtype
        shape = tuple(weight.shape)
        rank = len(shape)
        views = (
            (tuple(range(rank - 1)), math.prod(shape[:-1])),
            (tuple(range(rank)), math.prod(shape)),
        )
        conditions = []
        projections = []
        for axes, size in views:
            cosine = self._cosine_similarity(gradient, weight, axes, eps)
            threshold = constant(self.delta / math.sqrt(size), dtype)
            conditions.append(ops.less(ops.max(cosine), threshold))
            projections.append(self._project(weight, perturb, axes, eps))

        use_channel, use_layer = conditions
        perturb = ops.where(
            use_channel,
            projections[0],
            ops.where(use_layer, projections[1], perturb),
        )
        wd_ratio = ops.where(
            ops.logical_or(use_channel, use_layer),
            constant(self.wd_ratio, dtype),
            constant(1.0, dtype),
        )
        return perturb, wd_ratio

    def update_step(self, gradient, variable, learning_rate):
        """Update step given gradient and the associated model variable."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        # Python floats go through `convert_to_tensor(..., dtype)`: `cast`
        # would round them to float32 first (0.9 -> 0.89999998 in float64).
        one = constant(1.0, dtype)
        eps = constant(self.epsilon, dtype)
        beta_1 = constant(self.beta_1, dtype)
        beta_2 = constant(self.beta_2, dtype)
        one_minus_beta_1 = constant(1.0 - self.beta_1, dtype)
        one_minus_beta_2 = constant(1.0 - self.beta_2, dtype)
        bias_correction_1 = bias_correction(self.beta_1, local_step, dtype)
        bias_correction_2 = bias_correction(self.beta_2, local_step, dtype)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]

        # Sparse gradients (e.g. `tf.IndexedSlices` from an embedding) are
        # made dense: the projection needs the whole gradient.
        gradient = ops.add(ops.zeros(variable.shape, dtype), gradient)

        new_m = ops.add(
            ops.multiply(m, beta_1), ops.multiply(gradient, one_minus_beta_1)
        )
        new_v = ops.add(
            ops.multiply(v, beta_2),
            ops.multiply(ops.square(gradient), one_minus_beta_2),
        )
        self.assign(m, new_m)
        self.assign(v, new_v)

        denom = ops.add(
            ops.divide(ops.sqrt(new_v), ops.sqrt(bias_correction_2)), eps
        )
        step_size = ops.divide(lr, bias_correction_1)
        if self.nesterov:
            direction = ops.add(
                ops.multiply(new_m, beta_1),
                ops.multiply(gradient, one_minus_beta_1),
            )
        else:
            direction = new_m
        perturb = ops.divide(direction, denom)

        wd_ratio = None
        if len(variable.shape) > 1:
            perturb, wd_ratio = self._projection(
                variable, gradient, perturb, eps
            )

        # Decay first (with the weight the projection saw), then the step.
        new_variable = variable
        if self.weight_decay > 0 and self._use_weight_decay(variable):
            decay = ops.multiply(lr, constant(self.weight_decay, dtype))
            if wd_ratio is not None:
                decay = ops.multiply(decay, wd_ratio)
            new_variable = ops.multiply(variable, ops.subtract(one, decay))
        self.assign(
            variable,
            ops.subtract(new_variable, ops.multiply(step_size, perturb)),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "delta": self.delta,
                "wd_ratio": self.wd_ratio,
                "nesterov": self.nesterov,
            }
        )
        return config
