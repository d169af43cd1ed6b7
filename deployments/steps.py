"""prefect.yaml's pull step: a deployment's flow run starts in the walship checkout.

A process worker starts each run in a temporary directory, and the
deployments' entrypoints (``flows/restore.py:restore_flow``...) are relative
to the checkout. The checkout is ``WALSHIP_PROJECT_DIR`` when the worker's
environment names one, else the one this module is imported from: a worker
runs from the checkout's venv, which has walship installed from it, so
``prefect worker start --pool walship`` works as ``prefect deploy`` prints it.
A directory that holds no walship fails the step, and so the run, with a
message naming it, instead of a missing-file error from a temporary directory.
"""

import logging
import os
from pathlib import Path
from uuid import UUID

from prefect.logging.loggers import flow_run_logger

from deployments.config import ROOT

__all__ = ["CheckoutNotFoundError", "enter_checkout"]


class CheckoutNotFoundError(RuntimeError):
    """The directory a run should start in holds no walship checkout."""


def enter_checkout() -> dict[str, str]:
    """Change into the walship checkout; Prefect's step output is its path."""
    given = os.environ.get("WALSHIP_PROJECT_DIR")
    directory = Path(given) if given else ROOT
    if not (directory / "flows" / "__init__.py").is_file():
        where = f"WALSHIP_PROJECT_DIR={given}" if given else f"{directory}, where walship is installed from,"
        message = (
            f"{where} is not a walship checkout (it has no flows/): "
            "set WALSHIP_PROJECT_DIR in the worker's environment to the checkout that holds prefect.yaml"
        )
        _run_log().error("%s", message)
        raise CheckoutNotFoundError(message)
    os.chdir(directory)
    return {"directory": str(directory)}


def _run_log() -> logging.LoggerAdapter[logging.Logger] | logging.Logger:
    """The flow run's own log when a worker runs the step (Prefect reports a failed step only on the
    worker's output), else this module's."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    return flow_run_logger(flow_run_id=UUID(run_id)) if run_id else logging.getLogger(__name__)
