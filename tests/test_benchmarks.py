"""Smoke tests of the benchmark scripts: the harness runs and writes sane
results. They check that the numbers exist and are positive, not that the
performance targets are met (that depends on the machine and its load).
Each script runs as `python -m benchmarks.NAME` from the repository root.
"""

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
ENVIRONMENT_KEYS = {"date", "nproc", "python", "numpy", "code", "command"}


def run_script(name, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def load(directory, stem):
    assert (directory / f"{stem}.md").read_text().startswith("# ")
    return json.loads((directory / f"{stem}.json").read_text())


@pytest.mark.parametrize(
    "name",
    [
        "detector_cost",
        "overhead",
        "replay",
        "switch_ceiling",
        "smoother_agreement",
        "suite",
    ],
)
def test_help(name):
    out = run_script(name, "--help").stdout
    assert "--quick" in out and "--out" in out


def imports_of(path):
    """The modules `path` imports, and whether it touches `sys.path`."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    touches = any(
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
        for node in ast.walk(tree)
    )
    return names, touches


def test_one_harness_imported_the_clean_way():
    """No script edits sys.path, each imports the others as `benchmarks.*`
    (never by a bare name that only a sys.path edit would resolve), and of
    the package only the public names and the core modules."""
    scripts = sorted(BENCHMARKS.glob("*.py"))
    local = {p.stem for p in scripts}
    allowed = {
        "keras_autolr",
        "keras_autolr.core",
        "keras_autolr.core.options",
        "keras_autolr.core.smoothers",
        "keras_autolr.core.warmup",
        "keras_autolr.core.schedule",
    }
    assert {"suite", "tasks", "common"} <= local
    assert "quality" not in local and "provenance" not in local
    for path in scripts:
        names, touches = imports_of(path)
        assert not touches, f"{path.name} edits sys.path"
        assert not names & local, f"{path.name} imports {names & local}"
        package = {n for n in names if n.split(".")[0] == "keras_autolr"}
        assert package <= allowed, f"{path.name}: {package - allowed}"


def test_environment_is_one_provenance_record(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import common

    env = common.environment(extra="1")
    assert ENVIRONMENT_KEYS <= set(env) and env["extra"] == "1"
    assert env["nproc"] >= 1 and env["code"]
    line = common.describe_environment(dict(env, workers=2, threads=1))
    assert f"Python {env['python']}" in line and "2 worker(s)" in line
    assert common.describe_environment("as recorded") == "as recorded"


def test_detector_cost_quick(tmp_path):
    proc = run_script("detector_cost", "--quick", "--out", str(tmp_path))
    assert "| N losses |" in proc.stdout
    result = load(tmp_path, "detector_cost")
    assert ENVIRONMENT_KEYS <= set(result["environment"])
    assert result["environment"]["nproc"] >= 1
    assert result["target_ms"] == 50.0
    assert isinstance(result["target_met"], bool)
    rows = result["results"]
    assert [r["n"] for r in rows] == [1_000, 10_000]
    for r in rows:
        assert 0 < r["bins"] <= 1024
        assert r["state_bytes"] > 0
        assert r["step_us"] > 0 and r["step_us_with_checks"] > 0
        assert r["first_ms"] > 0
        assert 0 < r["check_ms_median"] <= r["check_ms_p90"]
        assert len(r["check_ms_all"]) == r["repeats"] == 5
        assert r["checks_while_feeding"] > 0
        assert 0 <= r["gp_runs_while_feeding"] <= r["checks_while_feeding"]
        # The same test with smoother="tfp".
        assert 0 < r["tfp_check_ms_median"] <= r["tfp_check_ms_p90"]
        assert len(r["tfp_check_ms_all"]) == r["tfp_repeats"] == 2
    assert "## Cost of one test per smoother" in proc.stdout


@pytest.mark.slow
def test_overhead_quick(tmp_path):
    proc = run_script(
        "overhead", "--quick", "--out", str(tmp_path), "--name", "short"
    )
    assert "| spe |" in proc.stdout
    assert not (tmp_path / "overhead.json").exists()
    result = load(tmp_path, "short")
    env = result["environment"]
    assert ENVIRONMENT_KEYS | {"tensorflow", "keras"} <= set(env)
    assert result["settings"]["pairs"] == 2
    assert result["settings"]["model"] == "small"
    assert all(s > 0 for s in result["warmup_seconds"].values())
    rows = result["results"]
    assert [r["steps_per_execution"] for r in rows] == [1, 32]
    for r in rows:
        assert len(r["pairs"]) == len(r["ratios"]) == 2
        assert all(ratio > 0 for ratio in r["ratios"])
        assert r["median_ratio"] > 0
        assert r["median_ratio_after_first_epoch"] > 0
        assert r["median_baseline_s"] > 0 and r["median_autolr_s"] > 0
        assert r["median_reader_ratio"] > 0 and r["median_ratio_to_reader"] > 0
        assert 0 < r["median_hook_fraction"] < 1
        assert r["hook_target"] == {1: 0.02, 32: 0.01}[r["steps_per_execution"]]
        assert r["hook_target_met"] == (
            r["median_hook_fraction"] <= r["hook_target"]
        )
        assert 0 <= r["median_test_fraction"] < 1
        for pair in r["pairs"]:
            assert pair["ratio_to_reader"] == pytest.approx(
                pair["autolr"]["seconds"] / pair["reader"]["seconds"]
            )
        assert isinstance(r["target_met"], bool)
        assert r["median_cpu_ratio"] > 0
        for pair in r["pairs"]:
            assert pair["autolr"]["checks"] >= pair["autolr"]["detector_runs"]
            assert pair["autolr"]["detector_runs"] >= 0
            assert pair["autolr"]["switch_reason"] is not None
            assert pair["cpu_ratio"] == pytest.approx(
                pair["autolr"]["cpu_seconds"] / pair["baseline"]["cpu_seconds"]
            )


@pytest.mark.slow
def test_switch_ceiling_quick(tmp_path):
    missing = tmp_path / "none.progress.jsonl"
    proc = run_script(
        "switch_ceiling", "--quick", "--out", str(tmp_path),
        "--progress", str(missing),
    )  # fmt: skip
    assert "| switch step |" in proc.stdout
    result = load(tmp_path, "switch_ceiling")
    settings = result["settings"]
    runs, cells = result["runs"], result["cells"]
    # Every cell on every seed; the cells best first, each the mean of its
    # runs; no peak above the LR its ramp reached.
    assert len(runs) == len(cells) * len(settings["seeds"]) > 0
    means = [c["mean_accuracy"] for c in cells]
    assert means == sorted(means, reverse=True)
    for cell in cells:
        mine = [
            r["test_accuracy"]
            for r in runs
            if (r["switch_step"], r["peak_lr"])
            == (cell["switch_step"], cell["peak_lr"])
        ]
        assert cell["mean_accuracy"] == pytest.approx(sum(mine) / len(mine))
        reached = 1e-4 * 1e4 ** (
            (cell["switch_step"] - 1) / int(0.4 * settings["total_steps"])
        )
        assert cell["peak_lr"] <= reached
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in runs)
    assert result["suite"] is None  # No suite record at this budget.
    assert "The suite has no record" in proc.stdout


@pytest.mark.slow
def test_replay_quick(tmp_path):
    # No progress file: the synthetic stand-in, cells 1, 6, 7 and 9 trained.
    missing = tmp_path / "none.progress.jsonl"
    args = ["--quick", "--tasks", "lm", "--optimizers", "lamb"]
    args += ["--workers", "1", "--out", str(tmp_path)]
    proc = run_script("replay", *args, "--progress", str(missing))
    assert "synthetic stand-in" in proc.stdout
    result = load(tmp_path, "replay")
    assert ENVIRONMENT_KEYS <= set(result["meta"])
    [table] = result["tables"]
    assert table["optimizer"] == "lamb"
    assert table["record"]["synthetic"] and table["grid_best"]["synthetic"]
    cells = table["cells"]
    names = ["as run", "ramp to grid best", "grid best"]
    names.append("grid best, LAMB excluding biases and norms")
    assert [c["name"] for c in cells] == names
    assert all(math.isfinite(c["metric"]) for c in cells)
    assert cells[-1]["optimizer"] == "lamb_excluding"
    assert cells[-1]["landing_lr"] == cells[-2]["landing_lr"] == 3e-3
    as_run = cells[0]
    assert 0 < as_run["copy_step"] < as_run["switch_step"]
    assert as_run["lost_steps"] == as_run["switch_step"] - as_run["copy_step"]
    ramp = cells[1]
    assert ramp["lost_steps"] == 0 and ramp["landing_lr"] == 3e-3
    assert ramp["ramp_lr_at_copy"] >= 3e-3
    assert table["reference"]["metric"] is None  # Not trained.
    rows = [
        line.split(" | ")[0].lstrip("| ")
        for line in (tmp_path / "replay.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| cell |")
    ]
    assert rows == ["AutoLR run", *names]


def test_summarize_copies_suite_summary_and_the_results(tmp_path):
    results = BENCHMARKS / "results"
    suite = (results / "suite.md").read_text()
    # The summary table of suite.md: from its header row to the first
    # blank line after it.
    lines = suite.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("| task | B |")))
    first_table = lines[start : lines.index("", start)]
    readme, bench = tmp_path / "README.md", tmp_path / "bench.md"
    markers = "intro\n<!-- results:start -->\nstale\n<!-- results:end -->\n"
    markers += "end\n"
    readme.write_text(markers)
    bench.write_text(markers)
    run_script(
        "summarize",
        "--results",
        str(results),
        "--readme",
        str(readme),
        "--benchmarks-readme",
        str(bench),
    )

    def section(path):
        text = path.read_text()
        assert text.startswith("intro\n<!-- results:start -->\n")
        assert text.endswith("<!-- results:end -->\nend\n")
        return text.split("<!-- results:start -->")[1].split("<!-- res")[0]

    # The README: the suite's summary table and its sentence, no more.
    top = section(readme)
    assert "stale" not in top
    settings = json.loads((results / "suite.json").read_text())["settings"]
    cells = sum(len(t["batch_sizes"]) for t in settings["tasks"].values())
    assert len(first_table) == 2 + cells  # Header, rule, task x batch.
    for line in first_table:
        assert line in top.splitlines()
    assert "Means over seeds" in top and "(benchmarks/results/suite.md)" in top
    assert "#" not in top and "Verdicts" not in top
    assert "| method |" not in top  # No per-task table.

    # benchmarks/README.md: the whole of the short files, the chosen
    # sections of the long ones, headings demoted by two; the archive.
    full = section(bench)
    assert "stale" not in full
    whole = (
        "switch_ceiling",
        "detector_cost",
        "overhead",
        "overhead_long",
        "overhead_large",
    )
    for name in whole:
        body = (results / f"{name}.md").read_text().splitlines()
        rows = [line for line in body if line.startswith("| ")]
        assert rows and all(row in full.splitlines() for row in rows), name
        assert f"From [`results/{name}.md`](results/{name}.md)" in full
    for name in ("suite", "replay"):
        assert f"Excerpt of [`results/{name}.md`]" in full
    assert "\n#### Summary\n" in full and "\n## Summary" not in full
    # Left in suite.md: the verdicts of each half, the grids.
    assert "\n#### Verdicts\n" not in full
    assert "\n#### Grids\n" not in full
    assert "lm, B=32, adamp" not in full  # replay.md's tables too.
    assert full.count("\n### ") == len(whole) + 2 + 1
    # The retired quality benchmark, from its JSON: one row per method.
    archive = full.split("### Archived")[1]
    quality = json.loads((results / "quality.json").read_text())
    for method in quality["settings"]["methods"]:
        assert f"\n| {method} | " in archive
    mean = quality["summary"]["autolr_adamp"]["256"]["mean"]
    assert f"| autolr_adamp | {100 * mean:.2f} +- " in archive
    assert all(f"- {v}" in archive for v in quality["verdicts"])


def test_keep_sections(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.summarize import keep_sections

    body = "intro\n\n## A\n\na\n\n## B\n\nb\n\n## C\n\nc\n"
    assert keep_sections(body, None) == body
    kept = keep_sections(body, ("A", "C"))
    assert kept.startswith("intro\n") and "## A\n\na" in kept
    assert "## C\n\nc" in kept and "## B" not in kept
    assert keep_sections(body, ()) == "intro\n"


def test_benchmarks_readme_is_short_and_current():
    text = (BENCHMARKS / "README.md").read_text()
    assert len(text.splitlines()) < 400
    assert "quality.py" not in text.split("<!-- results:start -->")[0]
    assert "Tried and not kept" in text
