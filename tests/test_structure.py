"""The layout shows the architecture (README: Layout): the commands at the root, the
library in fcn/, the installer in install/. The library is layered: a module imports
only modules of its level or below, never a command, and nothing imports in a
circle; the commands are layered the same way above the library. Every project
import is at the top of its file (none hidden in a function), and the modules
install/bundle.py runs on (before .venv exists) use the standard library only."""
import ast
import sys

from conftest import REPO

# The library, bottom to top. A dataset module (fcn/datasets/*.py) counts as "datasets".
LIBRARY = [
    {"errors", "paths", "progress", "prototxt", "checker", "paper", "torch_net"},  # no import
    {"cli", "files", "images", "device", "surgery"},
    {"downloads", "visual", "schedule", "archives", "timing"},
    {"datasets"},                                        # one module per dataset
    {"builder", "caffemodel", "memory", "metrics", "snapshots", "onnx_export", "preparation"},
    {"zoo", "segmenter"},
    {"squeezenet", "initial", "generate"},
    {"train", "weights"},
]
# The commands (the root's .py files): one floor, above the library; none imports
# another, nor does anything else outside fcn/ (scripts/, bench/, install/).
COMMANDS = [
    {"layers", "nets", "surgery", "score", "infer", "prepare", "reference", "reproduce"},
]
LEVEL = {f"fcn.{m}": i for i, ms in enumerate(LIBRARY) for m in ms}
LEVEL.update({m: len(LIBRARY) + i for i, ms in enumerate(COMMANDS) for m in ms})
TOP = len(LIBRARY) + len(COMMANDS)


# Imported inside functions on purpose: it imports PyTorch, an optional peer.
OPTIONAL = {"fcn.torch_net"}


def module_name(path):
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def files():
    paths = [*REPO.glob("*.py"), *REPO.glob("fcn/**/*.py"), *REPO.glob("install/*.py"),
             *REPO.glob("scripts/*.py"), *REPO.glob("bench/*.py")]
    return {module_name(p): p for p in paths}


MODULES = files()


def node_of(name):
    """The node of the graph a module belongs to: fcn.datasets.* -> fcn.datasets."""
    if name.startswith("fcn.datasets"):
        return "fcn.datasets"
    return name


def level(name):
    return LEVEL.get(node_of(name), TOP)          # scripts/, bench/, install/: on top


def imports(path):
    """[(imported project module, at the top of the file?)]."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from fcn import zoo" imports the module fcn.zoo
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        found += [(n, node in tree.body) for n in names if n in MODULES and n != "fcn"]
    return found


GRAPH = {m: {d for d, _ in imports(p)} - {m} for m, p in MODULES.items()}


def test_the_root_holds_the_commands_and_every_module_has_a_level():
    commands = {m for ms in COMMANDS for m in ms}
    assert {p.stem for p in REPO.glob("*.py")} == commands
    library = {node_of(m) for m in MODULES if m.startswith("fcn.")}
    assert library == {f"fcn.{m}" for ms in LIBRARY for m in ms}


def test_no_module_imports_one_above_it():
    upward = [(m, d) for m, ds in GRAPH.items() for d in ds if level(d) > level(m)]
    assert upward == []
    library_imports_command = [(m, d) for m, ds in GRAPH.items() if m.startswith("fcn")
                               for d in ds if not d.startswith("fcn")]
    assert library_imports_command == []


def test_nothing_outside_the_library_imports_a_file_outside_it():
    """A command is its argument parsing and calls into fcn/; scripts/, bench/ and
    install/ call into fcn/ too (the tests and the model folders' two-line scripts,
    not modules here, may import anything)."""
    outside = [(m, d) for m, ds in GRAPH.items() if not m.startswith("fcn")
               for d in ds if not d.startswith("fcn")]
    assert outside == []


def test_no_import_cycle():
    def reaches(a, b, seen):
        return any(d == b or (d not in seen and reaches(d, b, seen | {d})) for d in GRAPH[a])
    assert [m for m in GRAPH if reaches(m, m, set())] == []


def test_project_imports_are_at_the_top_of_each_file():
    inside = [(m, d) for m, p in MODULES.items() for d, top in imports(p)
              if not top and d not in OPTIONAL]
    assert inside == []


def test_the_installer_runs_on_the_standard_library():
    """install/bundle.py and install/wheel.py run with the system Python before .venv
    exists, and scripts/gpu_check.py with a GPU machine's Python, whatever it lacks: they
    and every library module they reach import the standard library only."""
    seen, todo = set(), ["install.bundle", "install.wheel", "scripts.gpu_check"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += GRAPH[m]
    third_party = {}
    for m in seen:
        tree = ast.parse(MODULES[m].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] not in sys.stdlib_module_names
                   and n.split(".")[0] != "fcn"]
            if bad:
                third_party[m] = bad
    assert third_party == {}
