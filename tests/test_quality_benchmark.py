"""`benchmarks/quality.py --quick` end to end, as CI runs it (a minute or so).

Needs the `mnist1d` package, which generates the data set locally.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import support

# The script imports both; say what to install rather than fail in it.
support.require("mnist1d")
support.require("matplotlib")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "quality.py"
ZERO_TUNING = {
    "autolr_adamp",
    "autolr_lamb",
    "schedulefree_adamw",
    "adam_constant",
    "adam_sqrt",
}
RUN_KEYS = {
    "key",
    "method",
    "optimizer",
    "batch_size",
    "seed",
    "test_accuracy",
    "test_loss",
    "final_train_loss",
    "train_loss_per_epoch",
    "wall_time_s",
    "steps_per_epoch",
    "total_steps",
}
AUTOLR_KEYS = {
    "autolr_switch_step",
    "autolr_reason",
    "autolr_peak_lr",
    "autolr_lr_before",
}


def run_quick(out):
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--out",
        str(out),
        "--cache-dir",
        str(out / "cache"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    result = run_quick(out)
    report = json.loads((out / "quality.json").read_text())
    return out, result, report


def test_runs_are_the_quick_plan(quick):
    _, _, report = quick
    runs = report["runs"]
    assert {r["method"] for r in runs} == ZERO_TUNING | {"oracle_adamp"}
    grid = [r for r in runs if r["method"] == "oracle_adamp"]
    cells = {(r["peak_lr"], r["warmup_fraction"]) for r in grid}
    assert len(grid) == len(cells) == 4
    assert len(runs) == len(ZERO_TUNING) + 4
    assert {r["batch_size"] for r in runs} == {2048}
    assert {r["seed"] for r in runs} == {0}
    assert len({r["key"] for r in runs}) == len(runs)


def test_run_records(quick):
    _, _, report = quick
    for run in report["runs"]:
        assert RUN_KEYS <= set(run), run["key"]
        assert 0.0 <= run["test_accuracy"] <= 1.0
        assert run["wall_time_s"] > 0
        assert len(run["train_loss_per_epoch"]) == report["settings"]["epochs"]
        if run["method"].startswith("autolr_"):
            assert AUTOLR_KEYS <= set(run)
            assert 0 < run["autolr_switch_step"] <= run["total_steps"]
            assert run["autolr_reason"] in {
                "minimum",
                "explosion",
                "divergence",
                "cap",
            }
            assert run["autolr_peak_lr"] > 0
        if run["method"] == "schedulefree_adamw":
            assert 0.0 <= run["test_accuracy_at_y"] <= 1.0


def test_report_metadata(quick):
    _, _, report = quick
    assert "--quick" in report["command"]
    assert report["wall_time_s"] > 0
    assert report["num_runs"] == len(report["runs"])
    assert {"oracle", "weight_decay", "autolr"} <= set(report["policy"])
    best = report["oracle"]["oracle_adamp"]["2048"]
    assert best["grid_size"] == best["grid_runs_done"] == 4
    assert best["reruns"] == 0
    stats = report["summary"]["autolr_adamp"]["2048"]
    assert 0.0 <= stats["mean"] <= 1.0
    assert stats["num_seeds"] == 1
    assert len(report["verdicts"]) == 2


def test_markdown_and_plot(quick):
    out, _, report = quick
    text = (out / "quality.md").read_text()
    assert "| method | B=2048 | runs needed |" in text
    for method in report["settings"]["methods"]:
        assert f"| {method} |" in text
    assert "within 1.0 point of oracle_adamp" in text
    assert report["command"] in text
    png = out / "quality.png"
    assert png.stat().st_size > 10_000
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0.01


def test_rerun_resumes_without_training(quick):
    out, _, report = quick
    result = run_quick(out)
    assert f"{len(report['runs'])} runs, 0 to do." in result.stdout
    again = json.loads((out / "quality.json").read_text())
    assert [r["key"] for r in again["runs"]] == [
        r["key"] for r in report["runs"]
    ]
