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
