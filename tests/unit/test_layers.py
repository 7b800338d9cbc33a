"""The layer rule of docs/architecture.md, checked on every import statement (AST, any depth)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Lowest first: a module may import its own layer and the layers before it, never later ones.
LAYERS = ("model", "data", "pipeline", "runtime")
TOP = "top"  # clinical_ner/__init__.py and cli.py: the user's command line, above every layer
NEVER_FROM_CORE = ("stacks", "step_functions", "lambdas", "glue_jobs", "clinical_ner_local")
# The one allowed edge out of the core package: `clinical-ner local run` starts local mode.
ALLOWED_OUTSIDE = {
    ("clinical_ner.cli", "clinical_ner_local.runner"),
    ("clinical_ner.cli", "clinical_ner_local.review_server"),  # `clinical-ner review`
}
SCRIPTS = "samples"  # clinical_ner/samples/*.py generate the bundled synthetic data


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module an import statement in `path` names, with its line (TYPE_CHECKING too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            # `from clinical_ner import monitoring` names a module, not an attribute
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "clinical_ner":
        return None
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return TOP


def _rank(layer: str) -> int:
    return len(LAYERS) if layer == TOP else LAYERS.index(layer)


def _core_files() -> list[Path]:
    return sorted(p for p in (REPO / "clinical_ner").rglob("*.py") if SCRIPTS not in p.parts)


def test_every_core_module_lives_in_a_layer():
    loose = [
        p.relative_to(REPO).as_posix()
        for p in _core_files()
        if _layer(_module_name(p)) == TOP and p.name not in {"__init__.py", "cli.py"}
    ]
    assert loose == []


def test_no_module_imports_a_later_layer():
    violations = []
    for path in _core_files():
        importer = _module_name(path)
        own = _layer(importer)
        assert own is not None
        for imported, line in _imports(path):
            target = _layer(imported)
            if target is not None and target != TOP and _rank(target) > _rank(own):
                violations.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {imported}")
    assert violations == []


def test_the_core_package_never_reaches_into_the_app_or_local_mode():
    violations = []
    for path in _core_files():
        importer = _module_name(path)
        for imported, line in _imports(path):
            allowed = any(
                importer == who and (imported == what or imported.startswith(what + "."))
                for who, what in ALLOWED_OUTSIDE
            )
            if imported.split(".")[0] in NEVER_FROM_CORE and not allowed:
                violations.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert violations == []


def _cycles(package: str) -> list[list[str]]:
    """Import cycles among the modules of `package`, counting imports inside functions."""
    files = {_module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}
    graph = {
        name: sorted({m for m, _ in _imports(path) if m in files and m != name})
        for name, path in files.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in graph:
        if start not in state:
            visit(start, [start])
    return cycles


@pytest.mark.parametrize("package", ["clinical_ner", "clinical_ner_local"])
def test_no_import_cycles(package):
    assert _cycles(package) == []


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checks above can fail: a model module importing the pipeline is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from clinical_ner.pipeline import gating\n")
    imported = [m for m, _ in _imports(bad)]
    assert "clinical_ner.pipeline.gating" in imported
    assert _rank(_layer("clinical_ner.pipeline.gating")) > _rank("model")
