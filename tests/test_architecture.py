import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class TestCoreIsFreeOfPrefect:
    """The core package never imports Prefect, nor anything above it (tasks, flows, the CLI); they import it."""

    def test_no_prefect_import_statement(self) -> None:
        offenders = []
        for path in (ROOT / "walship").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(ROOT)}: {n}"
                    for n in names
                    if n.split(".")[0] in ("prefect", "tasks", "flows", "walship_cli")
                ]
        assert offenders == []

    def test_importing_every_core_module_loads_no_prefect(self) -> None:
        modules = sorted(
            ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for p in (ROOT / "walship").rglob("*.py")
        )
        code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('prefect' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        assert result.stdout.strip() == "False"
        assert len(modules) > 10


PACKAGES = ("walship", "walship_cli", "flows", "tasks", "deployments", "bench", "scripts")


def _module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            found[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules ``name`` imports: anywhere in it (a deferred or a TYPE_CHECKING import couples too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}".rstrip(".")
            # ``from package import module`` imports the module; ``from module import name``, the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            module = target
            while module and module not in known:  # ``import a.b.name``: the module is a.b
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def import_circles(root: Path, packages: tuple[str, ...]) -> list[list[str]]:
    """Each circle of imports among the modules of ``packages`` under ``root``, as the sorted modules in it."""
    known = _module_names(root, packages)
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    # Tarjan's strongly connected components: one of more than a module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


class TestNoImportCircle:
    """Modules import each other one way: no module's imports lead back to it."""

    def test_the_project_has_no_import_circle(self) -> None:
        assert len(_module_names(ROOT, PACKAGES)) > 100
        assert import_circles(ROOT, PACKAGES) == []

    def test_a_circle_through_deferred_relative_and_type_checking_imports_is_found(self, tmp_path: Path) -> None:
        files = {
            "pkg/__init__.py": "from pkg.a import A\n",
            "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\nA = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def f():\n    from ..c import C\n",
            "pkg/c.py": "import pkg.a\nC = 2\n",
            "pkg/d.py": "from pkg import a, c\n",
        }
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        assert import_circles(tmp_path, ("pkg",)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
