"""The examples and the demo run as a user runs them, in quick mode.

Each runs in a fresh process, in a temporary directory, and must exit 0,
print its test accuracy and write its plot.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import support

support.require("matplotlib")

import matplotlib.image as mpl_image  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
# Generous: CI shares 2 cores; each takes well under a minute alone.
TIMEOUT = 600
ACCURACY = re.compile(r"^Test accuracy: (0\.\d{4}|1\.0000)$", re.MULTILINE)

pytestmark = pytest.mark.slow


def run(args, cwd):
    """Runs `python ARGS` in `cwd`; fails with its output if it fails."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MPLBACKEND", None)  # The plots must work headless by default.
    env.pop("DISPLAY", None)
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, (
        f"`python {' '.join(args)}` exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-5000:]}"
    )
    return done.stdout


def assert_png(path):
    assert os.path.exists(path), f"no plot at {path}"
    assert mpl_image.imread(path).shape == (750, 1000, 4)


@pytest.mark.parametrize(
    "name, needs",
    [
        ("quickstart_digits", "sklearn"),
        ("mnist1d_large_batch", "mnist1d"),
        ("keras_cv_resnet", "keras_cv"),
    ],
)
def test_example_runs_quick(name, needs, tmp_path):
    support.require(needs)
    stdout = run([os.path.join(EXAMPLES, f"{name}.py"), "--quick"], tmp_path)
    assert ACCURACY.search(stdout), stdout
    png = tmp_path / f"{name}.png"
    assert f"Plot saved to {png}" in stdout
    assert_png(png)


@pytest.mark.parametrize(
    "backend, engine",
    [
        ("tensorflow", "_DefaultDistributionStrategy with 1 replica(s)"),
        ("jax", "DataParallel over 1 cpu device(s)"),
    ],
)
def test_colab_notebook_runs_quick(backend, engine, tmp_path):
    """The notebook as written, on each of its engines: TensorFlow's
    strategy, and JAX's keras.distribution (on the one CPU here)."""
    support.require("papermill")
    support.require("ipykernel")
    support.require("mnist1d")
    output = tmp_path / "colab_tpu.ipynb"
    run(
        [
            "-m",
            "papermill",
            os.path.join(EXAMPLES, "colab_tpu.ipynb"),
            str(output),
            "-p",
            "QUICK",
            "True",
            "-p",
            "BACKEND",
            backend,
            "--cwd",
            str(tmp_path),
            "--no-progress-bar",
        ],
        tmp_path,
    )
    cells = json.loads(output.read_text())["cells"]
    outputs = [
        o for c in cells if c["cell_type"] == "code" for o in c["outputs"]
    ]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert engine in text
    assert ACCURACY.search(text), text
    assert "AutoLR: warmup ended at step" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert_png(tmp_path / "autolr_tpu.png")


def test_demo_writes_its_plot(tmp_path):
    support.require("sklearn")
    args = ["-m", "keras_autolr", "demo", "--epochs", "4"]
    stdout = run(args, tmp_path)
    assert "AutoLR decided: warmup" in stdout
    assert re.search(r"^Final test accuracy: \d\.\d{4}$", stdout, re.MULTILINE)
    assert f"Plot of the run: {tmp_path / 'autolr_demo.png'}" in stdout
    assert_png(tmp_path / "autolr_demo.png")


# 2 epochs of the demo: a budget too short for the tests, as AutoLR warns.
@pytest.mark.filterwarnings("ignore:AutoLR's budget:RuntimeWarning")
def test_demo_plot_can_be_skipped(tmp_path, monkeypatch, capsys):
    support.require("sklearn")
    from keras_autolr.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--epochs", "2", "--plot", ""]) == 0
    assert "Plot of the run" not in capsys.readouterr().out
    assert os.listdir(tmp_path) == []
