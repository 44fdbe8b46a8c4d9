"""Tests that `AdamP` and `LAMB` must both pass: argument checks, config
round trip, sparse gradients, gradient accumulation, XLA, saving a model
and `MirroredStrategy`.

The comparisons with each optimizer's reference implementation are in
`test_adamp.py` (PyTorch `adamp`) and `test_lamb.py` (NumPy).
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
import support  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_autolr.optimizers import LAMB, AdamP  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]

OPTIMIZERS = pytest.mark.parametrize(
    "cls", [AdamP, LAMB], ids=lambda cls: cls.__name__
)
# Arguments that also run each optimizer's own branch: AdamP's Nesterov
# direction, LAMB's layer-adaptation exclusion.
OWN_BRANCH = {
    AdamP: {"nesterov": True},
    LAMB: {"exclude_from_layer_adaptation": ["bias"]},
}


@pytest.mark.parametrize(
    "cls, name, value",
    [
        (cls, name, value)
        for cls in (AdamP, LAMB)
        for name, value in [
            ("beta_1", 1.0),
            ("beta_1", -0.1),
            ("beta_2", 1.0),
            ("beta_2", 1.5),
            ("epsilon", -1e-8),
            ("epsilon", -1.0),
            ("weight_decay", -0.1),
        ]
    ]
    + [
        (AdamP, "epsilon", 0.0),
        (AdamP, "delta", -1),
        (AdamP, "delta", "0.1"),
        (AdamP, "wd_ratio", -0.5),
        (AdamP, "nesterov", "yes"),
        (AdamP, "learning_rate", -0.1),
        (LAMB, "exclude_from_weight_decay", [1]),
        (LAMB, "exclude_from_layer_adaptation", ["("]),
    ],
)
def test_invalid_arguments_raise(cls, name, value):
    with pytest.raises(
        ValueError, match=f"`{name}`.*Received: {name}="
    ) as info:
        cls(**{name: value})
    assert str(value) in str(info.value)


@pytest.mark.parametrize(
    "cls, kwargs, expected",
    [
        (
            AdamP,
            {
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
            },
            {},
        ),
        (
            LAMB,
            {
                "learning_rate": 0.01,
                "weight_decay": 0.02,
                "exclude_from_weight_decay": ["bias", "norm"],
                "exclude_from_layer_adaptation": "bias",
            },
            # A single pattern comes back as a list; Addons' epsilon default.
            {"exclude_from_layer_adaptation": ["bias"], "epsilon": 1e-6},
        ),
    ],
    ids=["AdamP", "LAMB"],
)
def test_get_config_from_config_round_trip(cls, kwargs, expected):
    opt = cls(**kwargs)
    config = opt.get_config()
    for key, value in {**kwargs, **expected}.items():
        if key == "learning_rate":  # Held in a float32 variable.
            assert config[key] == pytest.approx(value), key
        else:
            assert config[key] == value, key
    restored = cls.from_config(config)
    assert isinstance(restored, cls)
    assert restored.get_config() == config
    deserialized = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(deserialized, cls)
    assert deserialized.get_config() == config


@pytest.mark.tensorflow_only  # tf.IndexedSlices.
@OPTIMIZERS
def test_sparse_gradient_matches_dense(cls):
    init = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    sparse_var = keras.Variable(init)
    dense_var = keras.Variable(init)
    values = tf.constant(np.arange(6, dtype="float32").reshape(2, 3) / 7)
    sparse = tf.IndexedSlices(values, tf.constant([1, 3]), tf.constant([5, 3]))
    dense = tf.convert_to_tensor(sparse)
    cls(0.1, weight_decay=0.1).apply_gradients([(sparse, sparse_var)])
    cls(0.1, weight_decay=0.1).apply_gradients([(dense, dense_var)])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy())
    assert not np.allclose(sparse_var.numpy(), init)


@OPTIMIZERS
def test_gradient_accumulation_uses_accumulated_step_count(cls):
    """Bias correction follows `iterations` (accumulated steps), so two
    accumulated halves equal one step on their mean."""
    rng = np.random.default_rng(0)
    init = rng.normal(size=(4, 3))
    grads = rng.normal(size=(6, 4, 3))
    accumulated = keras.Variable(init, dtype="float64")
    plain = keras.Variable(init, dtype="float64")
    opt_acc = cls(0.01, weight_decay=0.1, gradient_accumulation_steps=2)
    opt_plain = cls(0.01, weight_decay=0.1)
    for g in grads:
        opt_acc.apply_gradients([(keras.ops.convert_to_tensor(g), accumulated)])
    for g in grads.reshape(3, 2, 4, 3).mean(axis=1):
        opt_plain.apply_gradients([(keras.ops.convert_to_tensor(g), plain)])
    assert int(keras.ops.convert_to_numpy(opt_acc.iterations)) == 3
    np.testing.assert_allclose(accumulated.numpy(), plain.numpy(), rtol=1e-12)
    assert not np.allclose(plain.numpy(), init)


def _conv_bn_model(seed):
    # Conv + BatchNormalization, not `digits_mlp`: its kernel is
    # scale-invariant, the case AdamP's projection is for.
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


@pytest.mark.no_torch  # jit_compile=True.
@OPTIMIZERS
def test_jit_compile_matches_no_jit(cls):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    init = _conv_bn_model(0).get_weights()
    results = {}
    for jit in (False, True):
        model = _conv_bn_model(0)
        model.set_weights(init)
        model.compile(
            optimizer=cls(0.01, weight_decay=0.1, **OWN_BRANCH[cls]),
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


@OPTIMIZERS
def test_save_and_load_model_restores_state(cls, tmp_path):
    model = support.digits_mlp(
        hidden=(16,), optimizer=cls(0.01, weight_decay=0.05, **OWN_BRANCH[cls])
    )
    x, y = support.digits(n=32)
    for _ in range(3):
        model.train_on_batch(x, y)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert isinstance(loaded.optimizer, cls)
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
    """Both optimizers under `MirroredStrategy` on two logical CPUs match one
    device (LAMB's exclusions map replica variables back to the model's).

    One subprocess for both: the logical CPUs must be set up before
    TensorFlow initialises. The model has a `LayerNormalization` layer, not
    `digits_mlp`'s, for LAMB's layer-adaptation exclusion to match.
    """
    script = tmp_path / "mirrored_optimizers.py"
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
