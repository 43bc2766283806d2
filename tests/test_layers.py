"""Layers run one way: distillapp's machinery <- tasks <- annotation <- training.

Checked on every import statement, those inside functions included, so a lazy import
cannot slip a cycle back in (README, "Code map").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Package (or module) -> the top-level packages it must never import.
FORBIDDEN = {
    "annotation": {"training"},
    "tasks": {"annotation", "training"},
    "distillapp/ml.py": {"annotation", "training", "tasks"},
    "distillapp/ml_seq2seq.py": {"annotation", "training", "tasks"},
    "distillapp/jobs.py": {"annotation", "training", "tasks"},
    "distillapp/models.py": {"annotation", "training", "tasks"},
    "distillapp/progress.py": {"annotation", "training", "tasks"},
    "distillapp/settings.py": {"annotation", "training", "tasks"},
}
# torch and transformers are loaded through distillapp.ml and the task types' students only.
HEAVY = {"torch", "transformers"}
HEAVY_ALLOWED = {
    "distillapp/ml.py",
    "distillapp/ml_seq2seq.py",
    "tasks/classification/student.py",
    "tasks/extraction/student.py",
}
# The teacher LLM is reached through one boundary module (the worker only preloads openai).
OPENAI_BOUNDARY = "annotation/teacher/client.py"


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources(where: str) -> list[Path]:
    path = ROOT / where
    files = [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
    return [f for f in files if "migrations" not in f.parts]


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_layers_import_one_way(where):
    wrong = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[where])
        for f in sources(where)
        if imported_packages(f) & FORBIDDEN[where]
    }
    assert not wrong, f"imports against the layers: {wrong}"


def test_torch_is_imported_only_at_the_model_boundary():
    wrong = [
        str(f.relative_to(ROOT))
        for package in ("annotation", "training", "tasks", "distillapp")
        for f in sources(package)
        if imported_packages(f) & HEAVY and str(f.relative_to(ROOT)) not in HEAVY_ALLOWED
    ]
    assert not wrong, f"torch/transformers imported outside distillapp.ml and the students: {wrong}"


def test_openai_is_imported_only_by_the_teacher_client():
    importers = [
        str(f.relative_to(ROOT))
        for package in ("annotation", "training", "tasks")
        for f in sources(package)
        if "openai" in imported_packages(f)
    ]
    assert importers == [OPENAI_BOUNDARY], f"openai imported outside the teacher's client: {importers}"
