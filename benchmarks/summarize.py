"""Copies the measured benchmark tables into the two READMEs.

    python -m benchmarks.summarize

Every figure in the READMEs' result sections comes from the files that the
benchmark scripts write into `benchmarks/results/`, so that none is ever
typed by hand:

- `README.md`, between `<!-- results:start -->` and `<!-- results:end -->`:
  the summary table of the suite only (the `## Summary` section of
  `suite.md`);
- `benchmarks/README.md`, between the same markers: each result file of
  `SECTIONS`, in that order, under its own heading: the whole file, or its
  opening paragraphs and the `##` sections named there (the rest stays in
  the file, which the heading links); and last the archived table of the
  retired MNIST-1D quality benchmark, rendered from `quality.json`.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.common import RESULTS, ROOT

README = ROOT / "README.md"
BENCHMARKS_README = ROOT / "benchmarks" / "README.md"
# (result file, heading, the `##` sections kept; None: the whole file).
SECTIONS = (
    (
        "suite",
        "The suite: AutoLR versus tuned grids",
        ("Summary", "Candidate defaults against the goals", "Run"),
    ),
    ("switch_ceiling", "The best switch decision, in hindsight", None),
    ("replay", "AutoLR's trajectory replayed as fixed schedules", ()),
    ("detector_cost", "Cost of one minimum test", None),
    ("overhead", "Overhead of AutoLR in `fit`", None),
    ("overhead_long", "Overhead of AutoLR in a five times longer `fit`", None),
    (
        "overhead_large",
        "Overhead of AutoLR on a model of 50x the parameters",
        None,
    ),
)
ARCHIVE = "quality"  # results/quality.json, written by the retired script.
START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_result(results, name):
    """The body of `results/NAME.md` without its title, or None."""
    path = results / f"{name}.md"
    if not path.exists():
        return None
    text = path.read_text().strip()
    return re.sub(r"\A# .*\n+", "", text)


def keep_sections(body, names):
    """The text before the first `## ` heading and the `## ` sections whose
    heading is one of `names`; the whole body where `names` is None."""
    if names is None:
        return body
    parts = re.split(r"^(?=## )", body, flags=re.MULTILINE)
    kept = [parts[0]] if not parts[0].startswith("## ") else []
    for part in parts[1:] if kept else parts:
        heading = part.splitlines()[0][3:].strip()
        if heading in names:
            kept.append(part)
    return "\n".join(p.strip() + "\n" for p in kept if p.strip())


def suite_summary(results):
    """README's section: the `## Summary` section of suite.md."""
    body = read_result(results, "suite")
    if body is None:
        return "No results yet.\n"
    match = re.search(
        r"^## Summary\n(.*?)(?=^## )", body, flags=re.MULTILINE | re.DOTALL
    )
    if match is None:
        raise SystemExit(f"{results}/suite.md has no Summary section.")
    link = "benchmarks/results/suite.md"
    return f"From [`{link}`]({link}):\n\n{match.group(1).strip()}\n"


def archived_quality(results):
    """The summary and verdicts of `results/quality.json`, the record of
    the retired MNIST-1D quality benchmark, or None where it is absent."""
    path = results / f"{ARCHIVE}.json"
    if not path.exists():
        return None
    q = json.loads(path.read_text())
    settings, summary = q["settings"], q["summary"]
    sizes = [str(b) for b in settings["batch_sizes"]]
    codes = {}
    for run in q["runs"]:
        codes.setdefault(run["method"], set()).add(run["code"])
    lines = [
        f"Archived, not rerun: the record of the retired `quality.py` "
        f"(command `{q['command']}`, started {q['started']}). MNIST-1D, "
        f"{settings['train_size']} train / {settings['test_size']} test, "
        f"the suite's 1-D CNN, {settings['epochs']} epochs, seeds "
        f"{settings['seeds']}; grid warmup fractions {settings['warmups']}. "
        "Final test accuracy (%), mean +- half the range over seeds; the "
        "grid's (`oracle_*`) cell `(peak LR, warmup fraction)` chosen on "
        "the first seed's test accuracy. Code of each method's runs: "
        + "; ".join(
            f"{m} `{', '.join(sorted(c))}`" for m, c in sorted(codes.items())
        )
        + ".",
        "",
        "| method | " + " | ".join(f"B={b}" for b in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for method in settings["methods"]:
        cells = []
        for b in sizes:
            s = summary[method].get(b)
            if s is None:
                cells.append("-")
                continue
            cell = f"{100 * s['mean']:.2f} +- {100 * s['spread']:.2f}"
            if "best_peak_lr" in s:
                cell += (
                    f" ({s['best_peak_lr']:g}, {s['best_warmup_fraction']:g})"
                )
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {v}" for v in q["verdicts"]]]
    return "\n".join(lines) + "\n"


def all_sections(results):
    """benchmarks/README.md's section: the kept part of each result file,
    headings demoted by two levels under a `###` title of their own, then
    the archived quality table."""
    parts = []
    for name, title, names in SECTIONS:
        body = read_result(results, name)
        if body is None:
            continue
        body = keep_sections(body, names)
        body = re.sub(r"^(#+) ", r"\1## ", body, flags=re.MULTILINE)
        link = f"results/{name}.md"
        what = "From" if names is None else "Excerpt of"
        parts.append(f"### {title}\n\n{what} [`{link}`]({link}):\n\n{body}\n")
    archive = archived_quality(results)
    if archive is not None:
        link = f"results/{ARCHIVE}.json"
        parts.append(
            "### Archived: MNIST-1D from B=256 to B=8192 (retired quality "
            f"benchmark)\n\nFrom [`{link}`]({link}):\n\n{archive}"
        )
    return "\n".join(parts) if parts else "No results yet.\n"


def replace_section(path, body):
    """The text of the file `path` with `body` between its START and END
    markers."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} section.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--benchmarks-readme", type=Path, default=BENCHMARKS_README
    )
    args = parser.parse_args(argv)
    # Both files are checked before either is written.
    texts = {
        args.readme: replace_section(args.readme, suite_summary(args.results)),
        args.benchmarks_readme: replace_section(
            args.benchmarks_readme, all_sections(args.results)
        ),
    }
    for path, text in texts.items():
        path.write_text(text)
    print(
        f"Rebuilt the result sections of {args.readme} (suite summary) and "
        f"{args.benchmarks_readme} (the result files)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
