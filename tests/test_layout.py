"""The package's layout (issue 30): the core imports without any ML
framework, no module imports itself back through others, and no module
grows past the size of the largest today."""

import ast
import json
import pathlib
import subprocess
import sys
import textwrap

import keras_autolr

PACKAGE = pathlib.Path(keras_autolr.__file__).parent
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
# The largest module when the package became two wings (7ac9d27):
# core/controller.py, 516 lines.
MAX_LINES = 520


def test_the_core_imports_and_runs_without_any_ml_framework():
    """In a fresh interpreter where Keras, TensorFlow, JAX and PyTorch
    cannot be imported, the core imports, a controller runs a warmup to
    its end, and none of them was even asked for."""
    script = textwrap.dedent(
        f"""
        import importlib.abc
        import json
        import sys

        BLOCKED = {FRAMEWORKS!r}
        asked = []

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    asked.append(name)
                    raise ImportError(f"{{name}} is blocked")
                return None

        sys.meta_path.insert(0, Block())
        preloaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED]

        import keras_autolr
        import keras_autolr.core
        import keras_autolr.core.controller
        from keras_autolr import AutoLRController, MinimumDetector

        assert AutoLRController is keras_autolr.core.controller.AutoLRController
        assert MinimumDetector is keras_autolr.core.MinimumDetector
        ctl = AutoLRController(total_steps=600)
        lr = ctl.lr
        while ctl.phase == "warmup":
            lr = ctl.step(1.0 + 0.3 * (__import__("math").log10(lr) + 2) ** 2)
        json.dumps(ctl.get_state())
        loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print(json.dumps({{
            "preloaded": preloaded,
            "asked": asked,
            "loaded": loaded,
            "switch": ctl.switch_event["reason"],
            "core": sorted(
                m for m in sys.modules if m.startswith("keras_autolr.")
            ),
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["preloaded"] == []
    assert result["asked"] == [] and result["loaded"] == []
    assert result["switch"] in ("minimum", "overshoot")
    # Only the core was imported: no module of the Keras wing.
    assert "keras_autolr.core.controller" in result["core"]
    assert all(m.startswith("keras_autolr.core") for m in result["core"])


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name, path, modules):
    """The package's modules that module `name` imports, anywhere in it
    (functions included): `import a.b`, `from a import b` (the module
    `a.b` if there is one, else `a`) and relative imports."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".")
                if not is_package:
                    here = here[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join(here + ([base] if base else []))
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def find_cycle(graph):
    """A cycle of `graph` (a list of modules), or `None`."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, trail + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
        "a",
        "b",
        "c",
        "a",
    ]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_of_the_package_imports_itself_back():
    modules = package_modules()
    graph = {n: imports_of(n, p, modules) for n, p in modules.items()}
    # The graph is the real one: the controller's imports are found.
    assert "keras_autolr.core.warmup" in graph["keras_autolr.core.controller"]
    assert "keras_autolr.keras.compat" in graph["keras_autolr.keras.callback"]
    assert find_cycle(graph) is None, find_cycle(graph)
    # One way: the core imports nothing of the Keras wing.
    for name, imported in graph.items():
        if name.startswith("keras_autolr.core"):
            assert not {m for m in imported if "keras_autolr.keras" in m}, name


def test_no_module_is_longer_than_the_largest_of_the_two_wings():
    modules = package_modules()
    assert len(modules) > 20
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in modules.items()
    }
    too_long = {n: s for n, s in sizes.items() if s > MAX_LINES}
    assert not too_long, too_long
