"""What `AdamP` and `LAMB` share: Adam's bias correction, exact constants
and the docstring of the base-optimizer arguments."""

import math

from keras import ops

from keras_autolr.keras.compat import BASE_KWARGS_DOC


def constant(value, dtype):
    """A Python number as a tensor of `dtype`, without a float32 detour.

    `ops.cast` would round a Python float to float32 first (0.9 becomes
    0.89999998 in float64); `convert_to_tensor(..., dtype)` does not.
    """
    return ops.convert_to_tensor(value, dtype=dtype)


def bias_correction(beta, step, dtype):
    """`1 - beta**step`, accurate in float32 too.

    Computed as `-expm1(step * log(beta))` with `log(beta)` taken in Python
    (float64): `1 - beta**step` in float32 loses about 1e-5 relative to
    cancellation for `beta=0.999`, where the references work in float64.
    """
    log_beta = math.log(beta) if beta > 0 else -math.inf
    return ops.negative(
        ops.expm1(ops.multiply(step, constant(log_beta, dtype)))
    )


def fill_base_kwargs_doc(cls):
    """Class decorator: puts Keras's wording of the base-optimizer arguments
    in place of `{{base_optimizer_keyword_args}}` in the docstring."""
    if cls.__doc__ is not None:  # `None` under `python -OO`.
        cls.__doc__ = cls.__doc__.replace(
            "{{base_optimizer_keyword_args}}", BASE_KWARGS_DOC
        )
    return cls
