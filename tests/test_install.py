"""What `make install` leaves in .venv: the project's commands start from compiled bytecode."""

import importlib.util
import sys
from pathlib import Path

import botocore
import prefect
import pydantic
import pytest

import walship
import walship_cli

ROOT = Path(__file__).resolve().parent.parent


class TestBytecode:
    def test_dependencies_and_project_are_compiled(self) -> None:
        """Prefect, botocore, pydantic and walship each have a cached .pyc: no command compiles them at start."""
        if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
            pytest.skip("not run from the project's .venv: its install is not ours to check")
        for package in (prefect, botocore, pydantic, walship, walship_cli):
            source = package.__file__
            assert source is not None
            cached = Path(importlib.util.cache_from_source(source))
            assert cached.is_file(), f"{package.__name__} has no compiled bytecode at {cached}: run make install"
