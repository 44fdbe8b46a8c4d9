"""Tests of `keras_autolr.optimizers.AdamP` against the reference PyTorch
implementation (`adamp.AdamP` 0.3.0, clovaai/AdamP) fed with identical
gradient sequences.

The tests shared with `LAMB` are in `test_common.py`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import support  # noqa: E402

from keras_autolr.optimizers import AdamP  # noqa: E402

# Keras layout -> (shape, permutation of Keras axes giving the torch layout).
# Conv kernel (h, w, in, out) -> torch (out, in, h, w); Dense kernel (in, out)
# -> torch Linear (out, in); 1-D weights are the same in both.
PARITY_SHAPES = {
    "conv_kernel": ((3, 3, 4, 8), (3, 2, 0, 1)),
    "dense_kernel": ((16, 8), (1, 0)),
    "bias": ((8,), (0,)),
    "bn_gamma": ((8,), (0,)),
}
PARITY_STEPS = 50
# 2**-7: exactly representable in float32, so the float32 learning-rate
# variable Keras creates does not perturb the float64 comparison.
PARITY_LR = 2.0**-7
PARITY_WD = 0.1
# Max relative difference allowed: |keras - torch| <= tol * (|torch| +
# 1e-2 * max|torch|), per variable.
PARITY_TOL = {"float64": 1e-5, "float32": 1e-4}


def _to_torch(array, perm, dtype):
    import torch

    return torch.tensor(
        np.ascontiguousarray(array.transpose(perm)),
        dtype=getattr(torch, dtype),
    )


def _from_torch(tensor, perm):
    return tensor.detach().double().numpy().transpose(np.argsort(perm))


def _remove_radial(grad, weight):
    """Removes from `grad` its component along `weight`, per output channel
    (the last Keras axis), so AdamP's channel-wise projection triggers."""
    axes = tuple(range(grad.ndim - 1))
    radial = np.sum(grad * weight, axis=axes, keepdims=True)
    norm_sq = np.sum(weight * weight, axis=axes, keepdims=True)
    return grad - weight * radial / norm_sq


def _torch_run(init, grads, dtype, **kwargs):
    """Runs the reference on a recorded gradient sequence."""
    import torch
    from adamp import AdamP as TorchAdamP

    params = {
        k: torch.nn.Parameter(_to_torch(init[k], perm, dtype))
        for k, (_, perm) in PARITY_SHAPES.items()
    }
    opt = TorchAdamP(list(params.values()), lr=PARITY_LR, **kwargs)
    for step_grads in grads:
        for k, (_, perm) in PARITY_SHAPES.items():
            params[k].grad = _to_torch(step_grads[k], perm, dtype)
        opt.step()
    return {
        k: _from_torch(params[k], perm)
        for k, (_, perm) in PARITY_SHAPES.items()
    }


def _parity_run(dtype, nesterov, weight_decay, orthogonal):
    """Trains Keras AdamP and the reference side by side on one gradient
    sequence; returns initial values, final values of both and gradients."""
    import torch
    from adamp import AdamP as TorchAdamP

    rng = np.random.default_rng(1234)
    init = {
        k: rng.normal(size=shape) for k, (shape, _) in PARITY_SHAPES.items()
    }
    init["bias"] *= 0.1
    init["bn_gamma"] = 1.0 + 0.1 * rng.normal(size=8)

    kvars = [
        keras.Variable(init[k], dtype=dtype, name=k) for k in PARITY_SHAPES
    ]
    kopt = AdamP(
        learning_rate=PARITY_LR, weight_decay=weight_decay, nesterov=nesterov
    )
    kopt.build(kvars)
    apply = support.compiled(
        lambda grads: kopt.apply_gradients(zip(grads, kvars, strict=True))
    )

    tparams = {
        k: torch.nn.Parameter(_to_torch(init[k], perm, dtype))
        for k, (_, perm) in PARITY_SHAPES.items()
    }
    topt = TorchAdamP(
        list(tparams.values()),
        lr=PARITY_LR,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )

    grads = []
    for _ in range(PARITY_STEPS):
        step_grads = {}
        for k, (shape, perm) in PARITY_SHAPES.items():
            grad = rng.normal(size=shape)
            if orthogonal and len(shape) > 1:
                weight = _from_torch(tparams[k], perm)
                grad = _remove_radial(grad, weight)
            step_grads[k] = grad
        grads.append(step_grads)
        apply(
            [
                keras.ops.convert_to_tensor(step_grads[k], dtype=dtype)
                for k in PARITY_SHAPES
            ]
        )
        for k, (_, perm) in PARITY_SHAPES.items():
            tparams[k].grad = _to_torch(step_grads[k], perm, dtype)
        topt.step()

    assert int(kopt.iterations.numpy()) == PARITY_STEPS
    keras_final = {
        k: np.asarray(v.numpy(), dtype=np.float64)
        for k, v in zip(PARITY_SHAPES, kvars, strict=True)
    }
    torch_final = {
        k: _from_torch(tparams[k], perm)
        for k, (_, perm) in PARITY_SHAPES.items()
    }
    return init, keras_final, torch_final, grads


def _max_rel_diff(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("orthogonal", [True, False], ids=["ortho", "random"])
@pytest.mark.parametrize("weight_decay", [0.0, PARITY_WD], ids=["nowd", "wd"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_parity_with_reference(dtype, orthogonal, weight_decay, nesterov):
    support.require("torch")
    support.require("adamp")
    init, keras_final, torch_final, grads = _parity_run(
        dtype, nesterov, weight_decay, orthogonal
    )
    tol = PARITY_TOL[dtype]
    for k in PARITY_SHAPES:
        expected = torch_final[k]
        # The run must move the weights for the comparison to mean anything.
        assert _max_rel_diff(init[k], expected) > 1e-2, k
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(
            keras_final[k],
            expected,
            rtol=tol,
            atol=1e-2 * tol * scale,
            err_msg=f"{k} ({dtype})",
        )
        assert _max_rel_diff(keras_final[k], expected) <= tol, k

    if orthogonal:
        # Non-vacuity: with the projection disabled (delta=0: the condition
        # `cos < 0` never holds) the reference gives a clearly different
        # result on the same gradients, so parity above covers the projection
        # branch (and, with weight decay, the `wd_ratio` scaling).
        no_projection = _torch_run(
            init,
            grads,
            dtype,
            weight_decay=weight_decay,
            nesterov=nesterov,
            delta=0.0,
        )
        for k in ("conv_kernel", "dense_kernel"):
            diff = _max_rel_diff(no_projection[k], torch_final[k])
            assert diff > 1e-3, (k, diff)
            assert diff > 100 * _max_rel_diff(keras_final[k], torch_final[k])
        for k in ("bias", "bn_gamma"):  # 1-D: never projected.
            np.testing.assert_array_equal(no_projection[k], torch_final[k])


def test_exclude_from_weight_decay_and_single_decay():
    """With zero gradients only the decay moves the weights: by exactly
    `1 - lr * wd * wd_ratio` for a projected kernel (zero cosine), `1 - lr *
    wd` for a 1-D weight, and not at all for an excluded variable. A second,
    base-class decay would change these factors."""
    lr, wd, wd_ratio = 0.5, 0.1, 0.25
    kernel = keras.Variable(np.ones((3, 2)), dtype="float64", name="kernel")
    gamma = keras.Variable(np.ones(2), dtype="float64", name="gamma")
    bias = keras.Variable(np.ones(2), dtype="float64", name="bias")
    opt = AdamP(learning_rate=lr, weight_decay=wd, wd_ratio=wd_ratio)
    opt.exclude_from_weight_decay(var_names=["bias"])
    variables = [kernel, gamma, bias]
    zeros = [keras.ops.zeros(v.shape, dtype="float64") for v in variables]
    for _ in range(2):
        opt.apply_gradients(zip(zeros, variables, strict=True))
    np.testing.assert_allclose(
        kernel.numpy(), (1 - lr * wd * wd_ratio) ** 2, rtol=1e-12
    )
    np.testing.assert_allclose(gamma.numpy(), (1 - lr * wd) ** 2, rtol=1e-12)
    np.testing.assert_array_equal(bias.numpy(), 1.0)
