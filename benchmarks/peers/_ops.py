"""What both ports share: exact constants, Adam's bias correction, state
that starts from the weights, and the base-class options they refuse.

(`keras_autolr.optimizers` has the same two helpers, privately; the
benchmarks import only the package's public names and core modules.)
"""

import math

import keras
from keras import ops


def constant(value, dtype):
    """A Python number as a tensor of `dtype`, without a float32 detour
    (`ops.cast` would round 0.9 to 0.89999998 first in float64)."""
    return ops.convert_to_tensor(value, dtype=dtype)


def bias_correction(beta, step, dtype):
    """`1 - beta**step` as `-expm1(step * log(beta))`: no cancellation in
    float32, where the references compute it in float64."""
    log_beta = math.log(beta) if beta > 0 else -math.inf
    return ops.negative(
        ops.expm1(ops.multiply(step, constant(log_beta, dtype)))
    )


def refuse_options(kwargs):
    """Pops `use_ema` and `gradient_accumulation_steps` from `kwargs`,
    raising if either is set: an average of `y`, or a step count of
    micro-batches, would break the ports' step-by-step agreement."""
    for name in ("use_ema", "gradient_accumulation_steps"):
        value = kwargs.pop(name, None)
        if value:
            raise ValueError(
                f"Argument `{name}` is not supported by this optimizer. "
                f"Received: {name}={value!r}"
            )


def from_first_step(optimizer, stored, initial):
    """`initial` at the optimizer's first step, else `stored`.

    State that starts as a copy of the weights (or another non-zero value)
    is set at the first step rather than in `build()`: Keras may build an
    optimizer inside the traced train step (`fit` on TensorFlow), where an
    assignment in `build()` is not kept. The references set it lazily too
    (`schedulefree` at the first step, optax in `init`).
    """
    first = ops.equal(ops.convert_to_tensor(optimizer.iterations), 0)
    # Variables as tensors: JAX's `where` does not take them.
    return ops.where(
        first, ops.convert_to_tensor(initial), ops.convert_to_tensor(stored)
    )


def scalar_dtype(variables):
    """The dtype of the per-step scalars: float64 if any variable is, else
    float32. (`keras.backend.result_type` says float32 for float64 on
    JAX.)"""
    dtypes = {keras.backend.standardize_dtype(v.dtype) for v in variables}
    return "float64" if "float64" in dtypes else "float32"


def safe_divide(x, y):
    """`x / y`, 0 where `y` is 0, in the tensors' own dtype (Keras 3.15's
    `ops.divide_no_nan` computes in float32 on PyTorch)."""
    zero = ops.zeros_like(y)
    nonzero = ops.not_equal(y, zero)
    quotient = ops.divide(x, ops.where(nonzero, y, ops.ones_like(y)))
    return ops.where(nonzero, quotient, zero)


def maximum(x, y):
    """`ops.maximum` in the tensors' own dtype (Keras 3.15's returns
    float32 for two float64 tensors on PyTorch)."""
    return ops.where(ops.greater(x, y), x, y)


def minimum(x, y):
    """`ops.minimum` in the tensors' own dtype (see `maximum`)."""
    return ops.where(ops.less(x, y), x, y)
