"""The layering docs/design.md and studio/__init__.py promise: a module imports only from layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import studio

STUDIO = Path(studio.__file__).parent
LAYERS = [
    {"config", "limits", "faults", "files", "settings"},
    {"weights", "backbones", "tasks", "task_files", "corpora", "prompts"},
    {"evaluation"},
    {"tuning", "library", "item_files"},
    {"jobs", "analysis", "projection", "plots", "live"},
    {"views", "build", "hub", "findings", "sweep", "fewshot", "space"},
    {"cli", "ui"},
]


def layer_of(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if module in names)


def studio_imports(path: Path) -> set[str]:
    """The studio modules a file imports (``from studio.x import``, ``from studio import x``, ``import studio.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "studio":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("studio.")}
    return {name for name in found if name[0].islower()} - {"__main__"}


def test_every_module_has_a_layer_and_imports_only_from_layers_above():
    modules = {p.stem for p in STUDIO.glob("*.py") if not p.stem.startswith("__")} | {"ui"}
    assert modules == set().union(*LAYERS), "a module was added or removed: place it in LAYERS and docs/design.md"
    wrong = []
    for path in [*STUDIO.glob("*.py"), *(STUDIO / "ui").glob("*.py")]:
        module = "ui" if path.parent.name == "ui" else path.stem
        if module.startswith("__"):
            continue
        for imported in studio_imports(path):
            if imported == "ui" and module == "ui":
                continue
            if imported in modules and layer_of(imported) > layer_of(module) or (
                    imported == module and module != "ui"):
                wrong.append(f"{path.relative_to(STUDIO.parent)} imports {imported}")
    assert not wrong, "imports against the layering: " + "; ".join(wrong)


def test_where_to_change_what_names_code_that_exists():
    """docs/design.md's table points newcomers at functions: each named one must exist in the named file."""
    import re

    text = (STUDIO.parent / "docs" / "design.md").read_text()
    section = text.split("## Where to change what", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`studio/" in line]
    assert len(rows) >= 15
    for row in rows:
        _, _, file_cell, names_cell, _ = row.split("|")
        path = STUDIO.parent / re.search(r"`([^`]+)`", file_cell).group(1)
        tree = ast.parse(path.read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        defined |= {target.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(target, ast.Name)}
        for name in re.findall(r"`([^`]+)`", names_cell):
            assert name.split(".")[-1] in defined, f"{path.name} has no {name} (docs/design.md, where to change what)"
