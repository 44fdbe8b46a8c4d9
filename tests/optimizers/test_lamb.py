"""Tests of `keras_autolr.optimizers.LAMB` against a NumPy LAMB reference.

The tests shared with `AdamP` are in `test_common.py`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_autolr.optimizers import LAMB  # noqa: E402

LR = 2.0**-4  # Exact in float32 (the learning-rate variable's dtype).
BETA_1 = 0.9
BETA_2 = 0.999
EPSILON = 1e-6
WEIGHT_DECAY = 0.1
STEPS = 8


def numpy_lamb(weights, grads, decay, adapt):
    """LAMB as in the paper and `tfa.optimizers.LAMB`, in float64.

    Args:
        weights: dict name -> initial array.
        grads: list (one per step) of dicts name -> gradient.
        decay: dict name -> whether weight decay applies.
        adapt: dict name -> whether the trust ratio applies.
    """
    w = {k: np.array(v, dtype=np.float64) for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, step_grads in enumerate(grads, start=1):
        for k, g in step_grads.items():
            m[k] = BETA_1 * m[k] + (1 - BETA_1) * g
            v[k] = BETA_2 * v[k] + (1 - BETA_2) * g * g
            m_hat = m[k] / (1 - BETA_1**t)
            v_hat = v[k] / (1 - BETA_2**t)
            update = m_hat / (np.sqrt(v_hat) + EPSILON)
            if decay[k]:
                update = update + WEIGHT_DECAY * w[k]
            ratio = 1.0
            if adapt[k]:
                w_norm = np.linalg.norm(w[k])
                u_norm = np.linalg.norm(update)
                if w_norm > 0 and u_norm > 0:
                    ratio = w_norm / u_norm
            w[k] = w[k] - ratio * LR * update
    return w


def _model():
    # Not `digits_mlp`: the exclusion patterns need a bias and a named
    # `LayerNormalization` layer, with nonzero initial biases.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, bias_initializer="ones", name="dense"),
            keras.layers.LayerNormalization(name="layer_norm"),
        ],
        name="net",
    )
    return model


def _run(opt, dtype="float32"):
    """Applies `STEPS` random gradients to the variables of `_model()` with
    `opt`; returns {path: (initial, final, gradients)}."""
    model = _model()
    variables = model.trainable_variables
    if dtype != "float32":
        variables = [
            keras.Variable(v.numpy(), dtype=dtype, name=v.name)
            for v in variables
        ]
    # Keys: model paths without the "net/" prefix, e.g. "dense/bias".
    paths = [v.path.removeprefix("net/") for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    init = {
        p: v.numpy().astype(np.float64)
        for p, v in zip(paths, variables, strict=True)
    }
    grads = []
    for _ in range(STEPS):
        step = {p: rng.normal(size=init[p].shape) for p in paths}
        grads.append(step)
        opt.apply_gradients(
            [
                (keras.ops.convert_to_tensor(step[p], dtype=v.dtype), v)
                for p, v in zip(paths, variables, strict=True)
            ]
        )
    final = {
        p: v.numpy().astype(np.float64)
        for p, v in zip(paths, variables, strict=True)
    }
    return init, final, grads


def _check(opt, decay, adapt):
    init, final, grads = _run(opt)
    assert set(decay) == set(init)
    expected = numpy_lamb(init, grads, decay, adapt)
    for k in init:
        np.testing.assert_allclose(final[k], expected[k], rtol=1e-5, err_msg=k)
        assert not np.allclose(final[k], init[k]), k
    return init, final, grads


def test_matches_numpy_reference_with_exclusions():
    opt = LAMB(
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        exclude_from_weight_decay=["bias", "layer_norm"],
        exclude_from_layer_adaptation=["bias"],
    )
    decay = {
        "dense/kernel": True,
        "dense/bias": False,
        "layer_norm/gamma": False,
        "layer_norm/beta": False,
    }
    adapt = {
        "dense/kernel": True,
        "dense/bias": False,
        "layer_norm/gamma": True,
        "layer_norm/beta": True,
    }
    init, final, grads = _check(opt, decay, adapt)

    # Non-vacuity: each kind of exclusion changes the result.
    all_true = dict.fromkeys(decay, True)
    adapted_bias = numpy_lamb(init, grads, decay, all_true)
    assert not np.allclose(adapted_bias["dense/bias"], final["dense/bias"])
    decayed_norm = numpy_lamb(init, grads, all_true, adapt)
    assert not np.allclose(
        decayed_norm["layer_norm/gamma"], final["layer_norm/gamma"]
    )


def test_layer_adaptation_defaults_to_weight_decay_exclusion():
    """As in tfa: `exclude_from_layer_adaptation=None` reuses the weight
    decay patterns."""
    opt = LAMB(
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        exclude_from_weight_decay=["bias"],
    )
    decay = {
        "dense/kernel": True,
        "dense/bias": False,
        "layer_norm/gamma": True,
        "layer_norm/beta": True,
    }
    _check(opt, decay, adapt=dict(decay))


def test_no_exclusions_and_base_class_exclusion_method():
    opt = LAMB(learning_rate=LR, weight_decay=WEIGHT_DECAY)
    opt.exclude_from_weight_decay(var_names=["gamma"])
    decay = {
        "dense/kernel": True,
        "dense/bias": True,
        "layer_norm/gamma": False,
        "layer_norm/beta": True,
    }
    adapt = dict.fromkeys(decay, True)
    _check(opt, decay, adapt)


def test_float64_variables():
    opt = LAMB(
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        exclude_from_layer_adaptation=["bias"],
    )
    init, final, grads = _run(opt, dtype="float64")
    decay = dict.fromkeys(init, True)
    adapt = {k: "bias" not in k for k in init}
    expected = numpy_lamb(init, grads, decay, adapt)
    for k in init:
        np.testing.assert_allclose(final[k], expected[k], rtol=1e-12)
