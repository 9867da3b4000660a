"""The package layout (ARCHITECTURE.md): no import cycles, and no module imports a layer above its own.

Read from the source with `ast`, every import counts: at the top, inside functions, and under
`TYPE_CHECKING` (a type-only reference upwards is still a wrong-way dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "converter"

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("converter.version", "converter.errors", "converter.models", "converter.asgi", "converter.bodies",
              "converter.expiring", "converter.redis_client")),
    ("settings, documents, records", ("converter.config", "converter.spec", "converter.auth.principal",
                                      "converter.telemetry.record", "converter.telemetry.tracing",
                                      "converter.invoke.serialize", "converter.invoke.media",
                                      "converter.invoke.request")),
    ("compiled tools", ("converter.tools",)),
    ("calls and checks", ("converter.invoke", "converter.credentials", "converter.auth", "converter.policy",
                          "converter.telemetry")),
    ("passthrough", ("converter.passthrough",)),
    ("catalog", ("converter.catalog",)),
    ("server", ("converter.server",)),
    ("entry points", ("converter.serve", "converter.demo", "converter.cli", "converter.entry",
                      "converter.__main__", "converter")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `path` imports (a `from pkg import sub` names the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("converter"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("converter"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            # `from pkg import sub` is an import of `sub` (any import of `pkg.sub` runs `pkg`'s
            # __init__ first, so that edge is not counted for `import pkg.sub` either).
            names = {alias.name for alias in node.names} - {s.rsplit(".", 1)[1] for s in submodules}
            found.update(submodules)
            if names:
                found.add(node.module)
    return {name for name in found if name in known}


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and ARCHITECTURE.md)"
    return best[1]


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) - {name} for name, path in found.items()}


def test_every_module_belongs_to_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = sorted(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
                   for module, deps in graph().items() for dep in deps if layer_of(dep) > layer_of(module))
    assert wrong == []


def test_there_are_no_import_cycles() -> None:
    edges = graph()
    # A package's __init__ re-exports its submodules; a submodule importing its own package (not a
    # sibling) would close a cycle through the __init__.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_check_sees_a_cycle_and_a_wrong_way_import(tmp_path: Path, monkeypatch) -> None:
    """The checks above can fail: a planted cycle and an upward import are found."""
    package = tmp_path / "converter"
    (package / "tools").mkdir(parents=True)
    (package / "server").mkdir()
    (package / "__init__.py").write_text("")
    (package / "tools" / "__init__.py").write_text("from converter.server import app\n")
    (package / "server" / "__init__.py").write_text("")
    (package / "server" / "app.py").write_text("import converter.tools\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", package)
    edges = graph()
    assert edges["converter.tools"] == {"converter.server.app"}
    assert edges["converter.server.app"] == {"converter.tools"}
    assert layer_of("converter.server.app") > layer_of("converter.tools")


# -- the tests' own layout: tests/*.py are unit tests, tests/integration/ starts processes ---------

TESTS = ROOT.parent / "tests"
PROCESS_MODULES = {"subprocess", "multiprocessing"}


def process_markers(path: Path) -> list[str]:
    """What in test file `path` needs more than this interpreter: a process module, the npm peers."""
    tree = ast.parse(path.read_text())
    found = [f"imports {alias.name}" for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names if alias.name.split(".")[0] in PROCESS_MODULES]
    found += [f"imports from {node.module}" for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROCESS_MODULES]
    found += [f"names {node.value!r}" for node in ast.walk(tree)
              if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value == "node_modules"]
    return found


def test_unit_test_files_start_no_processes_and_need_no_npm_packages() -> None:
    """`pytest tests/*.py` runs on a bare venv in seconds; what needs processes or tests/node lives
    in tests/integration/ (test_environment reads the npm lock file, this file plants the markers)."""
    wrong = {path.name: markers for path in sorted(TESTS.glob("test_*.py"))
             if path.name not in ("test_environment.py", "test_layout.py") and (markers := process_markers(path))}
    assert wrong == {}


def test_the_test_layout_check_can_fail(tmp_path: Path) -> None:
    planted = tmp_path / "test_planted.py"
    planted.write_text('import subprocess\nfrom multiprocessing import Pool\nX = Path("node_modules")\n')
    assert process_markers(planted) == ["imports subprocess", "imports from multiprocessing", "names 'node_modules'"]


def test_no_two_test_files_share_a_name() -> None:
    """tests/ and tests/integration/ are not packages: pytest imports each file by its base name,
    so two files of one name cannot be collected in one run (the whole suite would stop there)."""
    unit = {path.name for path in TESTS.glob("test_*.py")}
    assert sorted(unit & {path.name for path in (TESTS / "integration").glob("test_*.py")}) == []
