"""The project's modules import only modules at their level or below, in the flow
data -> layers -> nets/builder -> surgery -> training/score/infer -> reference, and
no two import each other (every import counted, those inside functions too)."""
import ast

from conftest import REPO

LEVELS = [
    {"errors", "files", "progress", "datasets", "cli", "downloads"},
    {"layers", "caffemodel", "visual"},
    {"builder", "nets"},
    {"surgery"},
    {"training", "score", "infer", "squeezenet", "prepare", "bundle"},
    {"reference", "reproduce"},
]
LEVEL = {m: i for i, ms in enumerate(LEVELS) for m in ms}


def project_imports(module):
    tree = ast.parse((REPO / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LEVEL)


def test_every_module_has_a_level():
    assert {p.stem for p in REPO.glob("*.py")} == set(LEVEL)


def test_no_module_imports_one_above_it_nor_a_cycle():
    graph = {m: project_imports(m) - {m} for m in LEVEL}
    upward = [(m, d) for m, ds in graph.items() for d in ds if LEVEL[d] > LEVEL[m]]
    assert upward == []

    def reaches(a, b, seen=()):
        return any(d == b or (d not in seen and reaches(d, b, seen + (d,))) for d in graph[a])
    assert [m for m in graph if reaches(m, m)] == []
