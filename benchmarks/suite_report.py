"""The suite's outputs: `suite.json`, `suite.md` and `suite.png`.

`write_report` turns the recorded runs into the statistics of
`suite_stats.py` and writes them: every number to the JSON; to the Markdown
the summary, a table per task, the verdicts, the AutoLR runs, the grids,
the policy, the candidate defaults against the goals (the verdicts and the
candidates per half of the suite, `tasks.HALVES`) and the AutoLR rows of
every code version; and one figure of each method's metric against the
batch size.
"""

import json
import math

import numpy as np

from benchmarks.common import describe_environment, fmt
from benchmarks.suite_fit import training_loss_rows, training_loss_section
from benchmarks.suite_plan import (
    ALTERNATIVES,
    AUTOLR,
    GRIDS,
    METHODS,
    OPTIMIZER,
    WEIGHT_DECAY,
    make_spec,
    run_key,
)
from benchmarks.suite_stats import (
    LANDING_WITHIN,
    MEDIAN_PAST_MINIMUM_GOAL,
    PAST_MINIMUM_GOAL,
    WITHIN_RELATIVE,
    autolr_history,
    autolr_table,
    by_half,
    candidate_goals,
    largest_of,
    median_of,
    summarize,
    verdicts,
)
from benchmarks.tasks import TASKS

POLICY = {
    "grid": (
        "Linear warmup from 0 to the peak LR, cosine decay to 0 "
        "(keras.optimizers.schedules.CosineDecay). The full grid (peak LR "
        "x warmup fraction) runs on the first seed only; the best cell by "
        "the task's metric on its held-out split is rerun on the other "
        "seeds, and its mean over all seeds is reported. Runs needed = "
        "grid size + reruns. Choosing on the held-out split favours the "
        "grid."
    ),
    "weight_decay": (
        f"AdamP and keras.optimizers.Lamb use weight_decay={WEIGHT_DECAY} "
        "in AutoLR and in the grid alike; Adam and ScheduleFreeAdamW keep "
        "their default (none), AdamW its default 0.004."
    ),
    "autolr": "AutoLR(epochs=E, verbose=0): every option at its default.",
    "schedulefree_adamw": (
        "keras.optimizers.ScheduleFreeAdamW() defaults; metrics at the "
        "averaged point x (its evaluation point), with the BatchNorm "
        "statistics re-estimated at x from 50 training batches in training "
        "mode; the metrics at y are recorded with an _at_y suffix."
    ),
    "schedulefree_reference": (
        "benchmarks/peers: Schedule-Free AdamW as its authors publish it "
        "(schedulefree 1.4.1 defaults, lr 0.0025, warmup 2 % of the run as "
        "its AlgoPerf submission), checked step by step against the "
        "schedulefree package; metrics at x, BatchNorm statistics "
        "re-estimated there as for ScheduleFreeAdamW."
    ),
    "prodigy_cosine": (
        "benchmarks/peers: Prodigy with prodigyopt 1.1.2's defaults (lr 1, "
        "d0 1e-6) and its README's cosine annealing to 0 over the run, "
        "checked step by step against optax.contrib.prodigy."
    ),
    "overshoot": (
        "max LR / landing LR: the largest LR up to the first decay step "
        "(the warmup's, or the landing LR itself where nothing was rolled "
        "back: ratio 1) over the peak LR the decay starts from."
    ),
    "failed_runs": (
        "A run whose metric is not finite counts as the trivial model: "
        "accuracy 0, the uniform model's loss ln(vocabulary), the RMSE of "
        "predicting the mean."
    ),
    "verdict": (
        "AutoLR is within 1 accuracy point (classification), or 3 % of the "
        "val loss / RMSE (others), of the grid of the same optimizer, and "
        "beats every zero-tuning alternative."
    ),
}


# ----------------------------------------------------------------------
# Outputs.


def show_metric(task, value, spec=None):
    """A metric for people: accuracy in %, the others as they are."""
    if value is None:
        return "-"
    if TASKS[task].kind == "classification":
        return f"{100 * value:.2f}"
    return format(value, spec or (".4f" if TASKS[task].kind == "lm" else ".1f"))


def metric_unit(task):
    kind = TASKS[task].kind
    return {
        "classification": "test accuracy (%), higher is better",
        "lm": "validation loss (nats/char), lower is better",
        "regression": "test RMSE (USD), lower is better",
    }[kind]


def write_markdown(path, meta, settings, runs, summary, rows, halves, fit_rows):
    seeds = settings["seeds"]
    parts = [
        "# Suite: AutoLR versus a tuned grid and zero-tuning alternatives",
        "",
        f"Seeds {seeds}; mean +- spread (half the range) over seeds. "
        "Runs needed: the runs a user would spend to get that result "
        "(grid cells + reruns; 1 for a zero-tuning method).",
        "",
    ]
    parts += _summary_section(settings, summary)
    for task, info in settings["tasks"].items():
        parts += [
            f"## {task}: {info['title']}",
            "",
            f"Data: {info['source']}. Budget: {info['epochs']} epochs. "
            f"Metric: {metric_unit(task)}.",
            "",
        ]
        sizes = [str(b) for b in info["batch_sizes"]]
        parts += [
            "| method | "
            + " | ".join(f"B={b}" for b in sizes)
            + " | runs needed |",
            "|---|" + "---|" * (len(sizes) + 1),
        ]
        for method in METHODS:
            cells, needed = [], "-"
            for b in sizes:
                stats = summary[task][b].get(method)
                cells.append(_cell(task, stats))
                needed = stats["runs_needed"] if stats else needed
            parts.append(
                f"| {method} | " + " | ".join(cells) + f" | {needed} |"
            )
        if TASKS[task].kind == "lm":
            parts += ["", *_perplexity_line(task, runs, info)]
        parts.append("")
    parts.append("## Verdicts")
    for half in halves.values():
        lines = [f"- {verdict_text(v)}" for v in half["verdicts"]]
        parts += ["", _half_heading(half), "", *lines]
    parts += ["", *_overshoot_section(rows), ""]
    fit = training_loss_section(fit_rows, show_metric)
    parts += [*fit, ""] if fit else []
    parts += _grid_tables(settings, runs)
    parts += ["## Policy", "", *[f"- {k}: {v}" for k, v in POLICY.items()]]
    parts += [
        "",
        "## Run",
        "",
        f"- Command: `{meta['command']}`",
        f"- Wall time of this invocation: {meta['wall_time_s']:.0f} s; sum "
        f"of the run times: {meta['sum_run_wall_time_s']:.0f} s over "
        f"{meta['num_runs']} runs.",
        *_plan_line(meta),
        *[
            f"- {task}, B={b}: median {t['wall_s']:.1f} s wall, "
            f"{t['cpu_s']:.1f} s CPU per run"
            for (task, b), t in meta["median_run_s"].items()
        ],
        f"- Started {meta['started']}; "
        f"{describe_environment(meta['environment'])}",
        f"- Code: {meta['code']}.",
        "",
    ]
    path.write_text("\n".join(parts))


def _plan_line(meta):
    if not meta.get("plan_num_runs"):
        return []
    workers = meta["environment"].get("workers", 1)
    hours = meta["plan_wall_time_s"] / 3600 / workers
    text = (
        f"- The whole plan: {meta['plan_num_runs']} runs; at the medians "
        f"below, {hours:.1f} h with {workers} worker(s)"
    )
    missing = meta["plan_unmeasured"]
    if missing:
        text += (
            f", leaving out the cells with no run yet ({', '.join(missing)})"
        )
    return [text + "."]


def _summary_section(settings, summary):
    """One table: per task and batch, the mean of AutoLR with each
    optimizer, of each tuned grid, and of the best zero-tuning
    alternative."""
    head = ["autolr_adamp", "autolr_lamb", "grid_adamp", "grid_lamb"]
    parts = [
        "## Summary",
        "",
        "Means over seeds; accuracy in %, validation loss in nats/char, "
        "RMSE in USD. The grids' cells were chosen on seed 0 among 12 runs "
        "each; the alternatives are `Adam()`, AdamW with 5 % warmup and "
        "cosine, Keras's `ScheduleFreeAdamW()`, and Schedule-Free AdamW "
        "and Prodigy as their authors publish them (`benchmarks/peers`).",
        "",
        "| task | B | metric | " + " | ".join(head) + " | best alternative |",
        "|---|---|---|" + "---|" * (len(head) + 1),
    ]
    for task, info in settings["tasks"].items():
        sign = 1.0 if info["higher_is_better"] else -1.0
        for b in (str(b) for b in info["batch_sizes"]):
            cells = summary[task][b]
            values = [
                show_metric(task, cells[m]["mean"]) if m in cells else "-"
                for m in head
            ]
            alts = [(cells[m]["mean"], m) for m in ALTERNATIVES if m in cells]
            best = max(alts, key=lambda a: sign * a[0]) if alts else None
            best_text = (
                "-"
                if best is None
                else (f"{show_metric(task, best[0])} ({best[1]})")
            )
            metric = {
                "classification": "accuracy",
                "lm": "val loss",
                "regression": "RMSE",
            }[TASKS[task].kind]
            parts.append(
                f"| {task} | {b} | {metric} | "
                + " | ".join(values)
                + f" | {best_text} |"
            )
    return [*parts, ""]


def _half_heading(half):
    title = {"tuning": "Tuning half", "held_out": "Held-out half"}
    return f"### {title[half['name']]}: {', '.join(half['tasks'])}"


def _candidates_section(halves):
    """Per half, one row per version recorded on the whole half: the goals
    it meets."""
    if not any(half["candidates"] for half in halves.values()):
        return []
    parts = [
        "",
        "## Candidate defaults against the goals",
        "",
        "Per half of the suite, tuning half first (`tasks.TUNING`, "
        "`tasks.HELD_OUT`): the defaults (the AutoLR runs of the tables "
        "above), then every code version and candidate default recorded on "
        "the whole half (every task, batch size, AutoLR method and seed), "
        "oldest first, judged against this report's grids and "
        "alternatives: per optimizer, the task and batch cells within the "
        "grid's tolerance and those above every zero-tuning alternative; "
        f"then, over its runs, the landing LRs within {LANDING_WITHIN:g}x "
        "of the grid's best peak LR (either side), and the largest LR "
        "before the decay over the LR at the smoothed minimum. The goals: "
        "every cell within and above, the landing near the grid's in 90 % "
        f"of runs, the largest LR at most {PAST_MINIMUM_GOAL:g}x the "
        f"minimum's in every run, with a median of at most "
        f"{MEDIAN_PAST_MINIMUM_GOAL:g}.",
    ]
    for half in halves.values():
        if half["candidates"]:
            parts += ["", _half_heading(half), ""]
            parts += _candidates_table(half["candidates"])
    return parts


def _candidates_table(rows):
    parts = [
        "| code | runs | AdamP within grid | AdamP beats alternatives "
        "| LAMB within grid | LAMB beats alternatives | landing within "
        f"{LANDING_WITHIN:g}x | median max LR / minimum LR | largest "
        f"| runs at most {PAST_MINIMUM_GOAL:g} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for method in AUTOLR:
            tally = row[method]
            cells += [
                f"{tally['near_grid']} / {tally['cells']}",
                f"{tally['beats_alternatives']} / {tally['cells']}",
            ]
        parts.append(
            f"| `{row['code']}` | {row['runs']} | "
            + " | ".join(cells)
            + f" | {row['landing_near_grid']} | "
            f"{fmt(row['median_past_minimum'], '.2f')} | "
            f"{fmt(row['largest_past_minimum'], '.3g')} | "
            f"{row['past_minimum_at_most_4']} |"
        )
    return parts


def _history_section(settings, history):
    """One table per task: a row per code version (oldest first), a column
    per batch size and AutoLR method."""
    codes = list(dict.fromkeys(h["code"] for h in history))
    parts = [
        "",
        "## AutoLR by code version",
        "",
        "The AutoLR rows of each code version recorded in the progress file "
        "(the tables above report the newest with every option at its "
        "default), and of the candidate defaults run with "
        "`--autolr-options` (the code version, then the options), oldest "
        "first: mean over seeds, and the median overshoot in brackets; a "
        "cell of fewer seeds than the plan's says how many.",
        "",
    ]
    cells = {
        (h["code"], h["task"], h["batch_size"], h["method"]): h for h in history
    }
    seeds = len(settings["seeds"])
    for task, info in settings["tasks"].items():
        columns = [(b, m) for b in info["batch_sizes"] for m in AUTOLR]
        rows = []
        for code in codes:
            row = [
                _history_cell(task, cells.get((code, task, b, m)), seeds)
                for b, m in columns
            ]
            if any(c != "-" for c in row):
                rows.append(f"| `{code}` | " + " | ".join(row) + " |")
        if not rows:
            continue
        header = " | ".join(f"B={b} {m}" for b, m in columns)
        parts += [f"### {task}", "", f"| code | {header} |"]
        parts += ["|---|" + "---|" * len(columns), *rows, ""]
    return parts


def _history_cell(task, h, seeds):
    if h is None:
        return "-"
    text = (
        f"{show_metric(task, h['mean'])} ({fmt(h['median_overshoot'], '.2f')})"
    )
    if h["seeds"] < seeds:
        text += f", {h['seeds']} seed"
    return text


def _cell(task, stats):
    if stats is None:
        return "-"
    spec = ".2f" if TASKS[task].kind == "classification" else None
    text = f"{show_metric(task, stats['mean'])} +- {_spread(task, stats, spec)}"
    if stats["failed"]:
        text += f" ({stats['failed']} failed)"
    if len(stats["values"]) < 2:
        text += f" (n={len(stats['values'])})"
    if "best_peak_lr" in stats:
        edge = "*" if stats["best_at_grid_edge"] else ""
        text += (
            f" ({stats['best_peak_lr']:g}{edge}, "
            f"{stats['best_warmup_fraction']:g})"
        )
    return text


def _spread(task, stats, spec):
    return show_metric(task, stats["spread"], spec)


def _perplexity_line(task, runs, info):
    """Mean validation perplexity per method and batch size."""
    text = []
    for b in info["batch_sizes"]:
        values = {}
        for r in runs:
            if r["task"] == task and r["batch_size"] == b:
                values.setdefault(r["method"], []).append(
                    r.get("val_perplexity")
                )
        shown = ", ".join(
            f"{m} {np.mean([v for v in vs if v is not None]):.2f}"
            for m, vs in values.items()
            if any(v is not None for v in vs) and m not in GRIDS
        )
        text.append(f"- Perplexity per char, B={b} (all seeds): {shown}.")
    return text


def verdict_text(v):
    task = v["task"]
    text = (
        f"{task}, B={v['batch_size']}, {v['method']} "
        f"{show_metric(task, v['autolr'])}: "
    )
    if v["grid"] is None:
        text += "grid not run; "
    else:
        within = (
            "1 point"
            if TASKS[task].kind == "classification"
            else f"{100 * WITHIN_RELATIVE:.0f} %"
        )
        text += (
            f"within {within} of grid_{v['method'].split('_', 1)[1]} "
            f"({show_metric(task, v['grid'])}): {_yes(v['near_grid'])}; "
        )
    if v["best_alternative"] is None:
        return text + "no alternative run."
    return text + (
        f"beats every zero-tuning alternative (best "
        f"{v['best_alternative']} "
        f"{show_metric(task, v['best_alternative_value'])}): "
        f"{_yes(v['beats_alternatives'])}."
    )


def _yes(flag):
    return "yes" if flag else "no"


def _overshoot_section(rows):
    if not rows:
        return []
    out = [
        "## AutoLR runs: switch, overshoot, landing LR",
        "",
        "max LR: the largest LR up to the first decay step; minimum LR: the "
        "LR at the smoothed loss minimum; past minimum = max LR / minimum "
        "LR; landing LR: the peak LR the decay starts from; overshoot = "
        "max LR / landing LR. Grid best: "
        "the grid's best peak LR (same task, batch size and optimizer); "
        "ratio = landing LR / grid best. Restored: `step: copy` for each "
        "restore of a weight copy (at the switch and at each decay "
        "restart): the step it happened and the step the copy was taken.",
        "",
        "| run | reason | step / total | max LR | minimum LR | past minimum "
        "| landing LR | overshoot | restarts (step: LR) | restored "
        "| grid best | landing / grid best |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rescues = ", ".join(f"{s}: {p:.3g}" for s, _, p in row["rescues"])
        restored = ", ".join(
            f"{a}: {b}" for a, b in row["restored_copy_steps"] or []
        )
        out.append(
            f"| {row['key']} | {row['reason']} | {row['switch_step']} / "
            f"{row['total_steps']} | {fmt(row['max_lr'], '.3g')} | "
            f"{fmt(row['minimum_lr'], '.3g')} | "
            f"{fmt(row['past_minimum'], '.3g')} | "
            f"{fmt(row['landing_lr'], '.3g')} | "
            f"{fmt(row['overshoot'], '.3g')} | {rescues or 'none'} | "
            f"{restored or '-'} | {fmt(row['grid_best_peak_lr'], '.3g')} | "
            f"{fmt(row['peak_over_grid_best'], '.3g')} |"
        )
    over = median_of([r["overshoot"] for r in rows])
    past = median_of([r["past_minimum"] for r in rows])
    ratio = median_of([r["peak_over_grid_best"] for r in rows])
    out += [
        "",
        f"Median overshoot (max LR / landing LR) over {len(rows)} AutoLR "
        f"runs: {fmt(over, '.3g')}; largest "
        f"{fmt(largest_of([r['overshoot'] for r in rows]), '.3g')}. Median "
        f"max LR / minimum LR: {fmt(past, '.3g')}; largest "
        f"{fmt(largest_of([r['past_minimum'] for r in rows]), '.3g')}. "
        f"Median landing LR / grid-best peak: {fmt(ratio, '.3g')}.",
    ]
    return out


def _grid_tables(settings, runs):
    """First-seed metric of every grid cell, warmup x peak LR."""
    first = settings["seeds"][0]
    by_key = {r["key"]: r for r in runs}
    out = []
    for task, info in settings["tasks"].items():
        for b in info["batch_sizes"]:
            for method in GRIDS:
                lrs = info[f"{OPTIMIZER[method]}_lrs"]
                table = [
                    f"### {task}, {method}, B={b}, seed {first}",
                    "",
                    "| warmup \\ peak LR | "
                    + " | ".join(f"{lr:g}" for lr in lrs)
                    + " |",
                    "|---|" + "---|" * len(lrs),
                ]
                any_done = False
                for w in settings["warmups"]:
                    cells = []
                    for lr in lrs:
                        r = by_key.get(
                            run_key(make_spec(task, method, b, first, lr, w))
                        )
                        any_done |= r is not None
                        cells.append(
                            "-"
                            if r is None
                            else show_metric(task, r[info["metric"]])
                        )
                    table.append(f"| {w:g} | " + " | ".join(cells) + " |")
                if any_done:
                    out += table + [""]
    return (["## Grids", "", *out]) if out else []


def write_plot(path, settings, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(settings["tasks"])
    cols = min(len(names), 5)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False
    )
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, task in zip(axes.flat, names, strict=False):
        sizes = settings["tasks"][task]["batch_sizes"]
        scale = 100 if TASKS[task].kind == "classification" else 1
        for method in METHODS:
            points = [
                (b, summary[task][str(b)][method])
                for b in sizes
                if method in summary[task][str(b)]
            ]
            if not points:
                continue
            style = "o-" if method in AUTOLR else "s--"
            style = "^:" if method in ALTERNATIVES else style
            ax.errorbar(
                [b for b, _ in points],
                [scale * s["mean"] for _, s in points],
                yerr=[scale * s["spread"] for _, s in points],
                fmt=style,
                capsize=3,
                label=method,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel(metric_unit(task).split(",")[0])
        ax.set_title(task, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"AutoLR (defaults) vs tuned grid vs zero-tuning alternatives, "
        f"mean +- half range over seeds {settings['seeds']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plan_time(plan_runs, medians):
    """The wall time of the whole plan at the measured medians: the runs of
    each `task|batch size` of `plan_runs` times its median, summed over
    the cells measured; and the cells not measured yet."""
    measured = {k: n for k, n in plan_runs.items() if k in medians}
    return {
        "plan_num_runs": sum(plan_runs.values()),
        "plan_wall_time_s": round(
            sum(n * medians[k]["wall_s"] for k, n in measured.items()), 1
        ),
        "plan_unmeasured": sorted(set(plan_runs) - set(measured)),
    }


def median_run_times(runs):
    """Median wall and CPU seconds per run, by `task|batch size`."""
    times = {}
    for r in runs:
        key = f"{r['task']}|{r['batch_size']}"
        times.setdefault(key, []).append(
            (r["wall_time_s"], r.get("cpu_time_s", math.nan))
        )
    return {
        k: {
            "wall_s": float(np.median([w for w, _ in v])),
            "cpu_s": float(np.median([c for _, c in v])),
        }
        for k, v in times.items()
    }


def write_report(out, name, meta, settings, runs, records):
    """Writes `{name}.json`, `{name}.md` and `{name}.png` into `out`:
    the reported `runs` of the plan, and every AutoLR record of `records`
    (the code versions and candidate defaults). Returns the verdicts."""
    summary = summarize(settings, runs)
    rows = autolr_table(settings, runs, summary)
    lines = verdicts(settings, summary)
    medians = median_run_times(runs)
    history = autolr_history(settings, records)
    candidates = candidate_goals(settings, summary, runs, records)
    halves = by_half(settings, summary, runs, records)
    fit_rows = training_loss_rows(settings, runs, summary)
    meta = {
        **meta,
        "sum_run_wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1),
        "num_runs": len(runs),
        **plan_time(meta.get("plan_runs", {}), medians),
    }
    payload = {
        **meta,
        "median_run_s": medians,
        "settings": settings,
        "policy": POLICY,
        "summary": summary,
        "autolr_runs": rows,
        "median_overshoot": median_of([r["overshoot"] for r in rows]),
        "median_past_minimum": median_of([r["past_minimum"] for r in rows]),
        "median_peak_over_grid_best": median_of(
            [r["peak_over_grid_best"] for r in rows]
        ),
        "verdicts": lines,
        "candidates": candidates,
        "halves": halves,
        "autolr_history": history,
        "training_loss": fit_rows,
        "runs": runs,
    }
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    meta["median_run_s"] = {tuple(k.split("|")): v for k, v in medians.items()}
    write_markdown(
        out / f"{name}.md",
        meta,
        settings,
        runs,
        summary,
        rows,
        halves,
        fit_rows,
    )
    extra = _candidates_section(halves)
    if history:
        extra += _history_section(settings, history)
    if extra:
        with open(out / f"{name}.md", "a") as f:
            f.write("\n".join(extra) + "\n")
    write_plot(out / f"{name}.png", settings, summary)
    return lines
