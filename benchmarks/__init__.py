"""The benchmarks of keras-autolr.

Each script runs from the repository root as a module, with the package
installed (`pip install -e ".[bench]"`), e.g. `python -m benchmarks.suite`;
`benchmarks/README.md` describes them all.
"""
