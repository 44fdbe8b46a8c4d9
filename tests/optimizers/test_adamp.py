"""Tests of `keras_autolr.optimizers.AdamP`.

The numerical tests compare against the reference PyTorch implementation
(`adamp.AdamP`, clovaai/AdamP) fed with identical gradient sequences.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from adamp import AdamP as TorchAdamP  # noqa: E402

from keras_autolr.optimizers import AdamP  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]

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
    apply = tf.function(
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
        apply([tf.constant(step_grads[k], dtype=dtype) for k in PARITY_SHAPES])
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


def test_gradient_accumulation_uses_accumulated_step_count():
    """Bias correction follows `iterations` (accumulated steps), so two
    accumulated halves equal one step on their mean."""
    rng = np.random.default_rng(0)
    init = rng.normal(size=(4, 3))
    grads = rng.normal(size=(6, 4, 3))
    accumulated = keras.Variable(init, dtype="float64")
    plain = keras.Variable(init, dtype="float64")
    opt_acc = AdamP(0.01, weight_decay=0.1, gradient_accumulation_steps=2)
    opt_plain = AdamP(0.01, weight_decay=0.1)
    for g in grads:
        opt_acc.apply_gradients([(tf.constant(g), accumulated)])
    for g in grads.reshape(3, 2, 4, 3).mean(axis=1):
        opt_plain.apply_gradients([(tf.constant(g), plain)])
    assert int(opt_acc.iterations.numpy()) == 3
    np.testing.assert_allclose(accumulated.numpy(), plain.numpy(), rtol=1e-12)
    assert not np.allclose(plain.numpy(), init)


def test_sparse_gradient_matches_dense():
    init = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    sparse_var = keras.Variable(init)
    dense_var = keras.Variable(init)
    values = tf.constant(np.arange(6, dtype="float32").reshape(2, 3) / 7)
    sparse = tf.IndexedSlices(values, tf.constant([1, 3]), tf.constant([5, 3]))
    dense = tf.convert_to_tensor(sparse)
    AdamP(0.1, weight_decay=0.1).apply_gradients([(sparse, sparse_var)])
    AdamP(0.1, weight_decay=0.1).apply_gradients([(dense, dense_var)])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy())
    assert not np.allclose(sparse_var.numpy(), init)


def _small_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )


def _small_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    return x, y


def test_jit_compile_matches_no_jit():
    x, y = _small_data()
    init = _small_model(0).get_weights()
    results = {}
    for jit in (False, True):
        model = _small_model(0)
        model.set_weights(init)
        model.compile(
            optimizer=AdamP(0.01, weight_decay=0.1, nesterov=True),
            loss="mse",
            jit_compile=jit,
        )
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        assert model.jit_compile is jit
        assert int(model.optimizer.iterations.numpy()) == 4
        results[jit] = model.get_weights()
    max_diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(results[True], results[False], strict=True)
    )
    assert max_diff <= 1e-5, max_diff
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(results[True], init, strict=True)
    )
    assert moved > 1e-3


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import numpy as np
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

    import keras

    from keras_autolr.optimizers import LAMB, AdamP


    def make_model():
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8),
                keras.layers.LayerNormalization(),
                keras.layers.Dense(3),
            ]
        )


    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    init = make_model().get_weights()


    def train(strategy, make_optimizer):
        with strategy.scope():
            model = make_model()
            model.set_weights(init)
            opt = make_optimizer()
            model.compile(optimizer=opt, loss="mse", steps_per_execution=1)
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return (
            model.get_weights(),
            int(opt.iterations.numpy()),
            strategy.num_replicas_in_sync,
        )


    def make_adamp():
        opt = AdamP(0.01, weight_decay=0.1)
        opt.exclude_from_weight_decay(var_names=["bias"])
        return opt


    def make_lamb():
        return LAMB(
            0.01,
            weight_decay=0.1,
            exclude_from_weight_decay=["bias"],
            exclude_from_layer_adaptation=["layer_normalization"],
        )


    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for name, make_optimizer in (("AdamP", make_adamp), ("LAMB", make_lamb)):
        single, single_steps, _ = train(
            tf.distribute.get_strategy(), make_optimizer
        )
        mirrored, mirrored_steps, replicas = train(strategy, make_optimizer)
        results[name] = {
            "replicas": replicas,
            "steps": [single_steps, mirrored_steps],
            "max_abs_diff": max(
                float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)
            ),
            "moved": max(
                float(np.max(np.abs(a - b))) for a, b in zip(single, init)
            ),
        }
    print("RESULT " + json.dumps(results))
    """
)


def test_mirrored_strategy_matches_single_device(tmp_path):
    """AdamP (and LAMB, whose exclusions map replica variables back to the
    model's) under `MirroredStrategy` on two logical CPUs match one device."""
    script = tmp_path / "mirrored_adamp.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULT ") :])
    assert set(results) == {"AdamP", "LAMB"}
    for name, result in results.items():
        assert result["replicas"] == 2, name
        assert result["steps"] == [4, 4], name
        assert result["moved"] > 1e-3, (name, result)
        assert result["max_abs_diff"] <= 1e-5, (name, result)


def test_get_config_from_config_round_trip():
    opt = AdamP(
        learning_rate=0.02,
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-6,
        weight_decay=0.05,
        delta=0.2,
        wd_ratio=0.3,
        nesterov=True,
        global_clipnorm=1.0,
        name="my_adamp",
    )
    config = opt.get_config()
    for key, value in {
        "learning_rate": 0.02,
        "beta_1": 0.8,
        "beta_2": 0.99,
        "epsilon": 1e-6,
        "weight_decay": 0.05,
        "delta": 0.2,
        "wd_ratio": 0.3,
        "nesterov": True,
        "global_clipnorm": 1.0,
        "name": "my_adamp",
    }.items():
        assert config[key] == pytest.approx(value), key
    restored = AdamP.from_config(config)
    assert isinstance(restored, AdamP)
    assert restored.get_config() == config
    deserialized = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(deserialized, AdamP)
    assert deserialized.get_config() == config


def test_save_and_load_model_restores_state(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=AdamP(0.01, weight_decay=0.05, nesterov=True), loss="mse"
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, y)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert isinstance(loaded.optimizer, AdamP)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 3
    # Same order, shapes and values (the paths differ: auto-numbered names,
    # and the loaded variables are named without the model prefix).
    original_vars = model.optimizer.variables
    loaded_vars = loaded.optimizer.variables
    assert len(loaded_vars) == len(original_vars)
    n_slots = 0
    for a, b in zip(original_vars, loaded_vars, strict=True):
        assert a.shape == b.shape, (a.path, b.path)
        np.testing.assert_array_equal(b.numpy(), a.numpy(), a.path)
        if a.name.endswith(("_momentum", "_velocity")):
            n_slots += 1
            assert np.any(a.numpy() != 0), a.path
    assert n_slots == 2 * len(model.trainable_variables)

    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "name, value",
    [
        ("beta_1", 1.0),
        ("beta_1", -0.1),
        ("beta_2", 1.5),
        ("epsilon", 0.0),
        ("epsilon", -1e-8),
        ("weight_decay", -0.1),
        ("delta", -1),
        ("wd_ratio", -0.5),
        ("nesterov", "yes"),
        ("learning_rate", -0.1),
        ("delta", "0.1"),
    ],
)
def test_invalid_arguments_raise(name, value):
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        AdamP(**{name: value})
    assert f"Received: {name}=" in str(info.value)
    assert str(value) in str(info.value)
