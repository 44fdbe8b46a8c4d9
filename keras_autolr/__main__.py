"""Command line: `python -m keras_autolr demo` (or `keras-autolr demo`)."""

import argparse
import sys


def main(argv=None):
    from keras_autolr import demo

    parser = argparse.ArgumentParser(
        prog="keras-autolr",
        description="Automatic learning-rate warmup and decay for Keras.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "demo", help="train on scikit-learn digits with AutoLR (no download)"
    )
    run.add_argument("--epochs", type=int, default=demo.DEFAULT_EPOCHS)
    run.add_argument("--batch-size", type=int, default=demo.DEFAULT_BATCH)
    run.add_argument("--optimizer", choices=("adamp", "lamb"), default="adamp")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--reference",
        action="store_true",
        help="the AutoWU paper's setting (AutoLR.reference): 1e-5 start, "
        "one test per epoch acting at once, patience 3, GP vote alone, "
        "constant-then-cosine decay",
    )
    run.add_argument(
        "--smoother",
        choices=("numpy", "tfp"),
        default="numpy",
        help="the GP of the tests: exact NumPy (default) or TensorFlow "
        "Probability's (pip install 'keras-autolr[tfp]')",
    )
    run.add_argument(
        "--plot",
        default=demo.DEFAULT_PLOT,
        metavar="PATH",
        help="PNG of the run's LR and loss (default: %(default)s; '' to skip)",
    )
    args = parser.parse_args(argv)
    return demo.main(args)


if __name__ == "__main__":
    sys.exit(main())
