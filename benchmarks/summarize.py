"""Copies the measured benchmark tables into the top-level README.

    python benchmarks/summarize.py

The README's benchmark section (between `<!-- results:start -->` and
`<!-- results:end -->`) is rebuilt from `benchmarks/results/*.md`, the files
the benchmark scripts write, so that no figure is ever typed by hand.
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, os.pardir, "README.md")
SECTIONS = (
    ("quality", "Quality: zero-tuning AutoLR versus a tuned grid"),
    ("detector_cost", "Cost of one minimum test"),
    ("switch_ceiling", "The best switch decision, in hindsight"),
    ("overhead", "Overhead of AutoLR in `fit`"),
    ("overhead_long", "Overhead of AutoLR in a five times longer `fit`"),
)
START, END = "<!-- results:start -->", "<!-- results:end -->"


def section(name, title, results):
    path = os.path.join(results, f"{name}.md")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        body = f.read().strip()
    # Drop the file's own top-level title; demote the rest by two levels.
    body = re.sub(r"\A# .*\n+", "", body)
    body = re.sub(r"^(#+) ", r"\1### ", body, flags=re.MULTILINE)
    link = f"benchmarks/results/{name}.md"
    return f"### {title}\n\nFrom [`{link}`]({link}):\n\n{body}\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--readme", default=README)
    args = parser.parse_args(argv)
    parts = [section(n, t, args.results) for n, t in SECTIONS]
    parts = [p for p in parts if p]
    with open(args.readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme} has no {START} ... {END} section.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(parts) if parts else "No results yet.\n"
    with open(args.readme, "w") as f:
        f.write(f"{head}{START}\n{body}{END}{tail}")
    print(f"README benchmark section rebuilt from {len(parts)} result files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
