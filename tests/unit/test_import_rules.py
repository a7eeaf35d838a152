"""The layers import one way: dags -> steps and plugins -> the runtime library; development tools apart.

Every ``import`` counts, the ones inside functions too (most heavy imports here are deferred into tasks).
Each rule names what a layer must not import; a failure lists the offending file, line and module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_PACKAGES = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists())
DEVTOOLS = "recsys_devtools"
STEPS = "recsys.steps"
# What a DAG file may take from the runtime package at parse time besides the step modules: the settings,
# the asset definitions and the notifiers built from settings (all stdlib-light).
DAG_PARSE_TIME = ("recsys.config", "recsys.assets", "recsys.alerts")


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT)
    if relative.parts[0] in ("include", "plugins"):
        relative = relative.relative_to(relative.parts[0])
    parts = list(relative.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _is(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(files: list[Path], forbidden) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imports_of(path)
        if forbidden(module)
    ]


def _library_files() -> list[Path]:
    return [p for p in _files("include/recsys") if not _is(_module_name(p), STEPS)]


RULES = {
    "plugins import nothing from include/": (
        lambda: _files("plugins"),
        lambda m: _is(m, "recsys", DEVTOOLS),
    ),
    "the runtime library imports no step, DAG, plugin or development tool": (
        _library_files,
        lambda m: _is(m, STEPS, DEVTOOLS, "dags", *PLUGIN_PACKAGES),
    ),
    "step modules import no DAG and no development tool": (
        lambda: _files("include/recsys/steps"),
        lambda m: _is(m, DEVTOOLS, "dags"),
    ),
    "DAG files take steps, plugins and parse-time settings only": (
        lambda: _files("dags"),
        lambda m: _is(m, DEVTOOLS) or (_is(m, "recsys") and not _is(m, STEPS, *DAG_PARSE_TIME)),
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_layer_rule(rule):
    files, forbidden = RULES[rule]
    assert files(), f"no files found for {rule!r}: the layout changed"
    assert _violations(files(), forbidden) == []


def _component(module: str) -> str | None:
    """``recsys.training.fit`` -> ``recsys.training``; ``recsys.policy`` -> ``recsys.policy``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "recsys" and len(parts) > 1 else None


def test_library_components_form_no_cycle():
    """Between the runtime library's packages and modules (recsys.data, recsys.training, recsys.policy, ...)
    the imports form a DAG: no two of them import each other, directly or around a loop."""
    names = {_module_name(p) for p in _library_files()}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _library_files():
        source = _component(_module_name(path))
        for _, module in imports_of(path):
            target = _component(module)
            if source and target and target != source and any(_is(n, target) for n in names):
                graph[source].add(target)
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target) :] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(list(graph)):
        if node not in state:
            visit(node, [node])
    assert cycles == [], cycles


def test_the_rules_see_an_arrow_against_the_direction(tmp_path):
    """The checker itself can fail: a library module importing a plugin and a step is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from personalize.hooks import PersonalizeHook\n    import recsys.steps.extract\n")
    forbidden = RULES["the runtime library imports no step, DAG, plugin or development tool"][1]
    found = [module for _, module in imports_of(bad) if forbidden(module)]
    assert "personalize.hooks" in found and "recsys.steps.extract" in found
