"""The operator CLI (``walship``): outside the core, since it may run Prefect flows; the core never imports it."""

from walship_cli._main import main

__all__ = ["main"]
