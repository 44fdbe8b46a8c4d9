"""Copies the measured benchmark tables into the two READMEs.

    python benchmarks/summarize.py

Every figure in the READMEs' result sections comes from the files that the
benchmark scripts write, `benchmarks/results/*.md`, so that none is ever
typed by hand:

- `README.md`, between `<!-- results:start -->` and `<!-- results:end -->`:
  the summary table of the multi-task suite only (the `## Summary`
  section of `suite.md`);
- `benchmarks/README.md`, between the same markers: every result file, in
  the order of `SECTIONS`, each under its own heading.
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, os.pardir, "README.md")
BENCHMARKS_README = os.path.join(HERE, "README.md")
SECTIONS = (
    ("suite", "The suite: four tasks, AutoLR versus tuned grids"),
    ("quality", "Quality: zero-tuning AutoLR versus a tuned grid"),
    ("switch_ceiling", "The best switch decision, in hindsight"),
    ("replay", "AutoLR's trajectory replayed as fixed schedules"),
    ("detector_cost", "Cost of one minimum test"),
    ("overhead", "Overhead of AutoLR in `fit`"),
    ("overhead_long", "Overhead of AutoLR in a five times longer `fit`"),
    ("overhead_large", "Overhead of AutoLR on a model of 50x the parameters"),
)
START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_result(results, name):
    """The body of `results/NAME.md` without its title, or None."""
    path = os.path.join(results, f"{name}.md")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    return re.sub(r"\A# .*\n+", "", text)


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


def all_sections(results):
    """benchmarks/README.md's section: every result file, headings demoted
    by two levels under a `###` title of their own."""
    parts = []
    for name, title in SECTIONS:
        body = read_result(results, name)
        if body is None:
            continue
        body = re.sub(r"^(#+) ", r"\1## ", body, flags=re.MULTILINE)
        link = f"results/{name}.md"
        parts.append(f"### {title}\n\nFrom [`{link}`]({link}):\n\n{body}\n")
    return "\n".join(parts) if parts else "No results yet.\n"


def replace_section(path, body):
    """The text of the file `path` with `body` between its START and END
    markers."""
    with open(path) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} section.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--readme", default=README)
    parser.add_argument("--benchmarks-readme", default=BENCHMARKS_README)
    args = parser.parse_args(argv)
    # Both files are checked before either is written.
    texts = {
        args.readme: replace_section(args.readme, suite_summary(args.results)),
        args.benchmarks_readme: replace_section(
            args.benchmarks_readme, all_sections(args.results)
        ),
    }
    for path, text in texts.items():
        with open(path, "w") as f:
            f.write(text)
    print(
        f"Rebuilt the result sections of {os.path.normpath(args.readme)} "
        f"(suite summary) and {os.path.normpath(args.benchmarks_readme)} "
        "(every result file)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
