"""age identities for tasks: loaded inside the run from a Prefect ``Secret`` block or a file on the worker.

Like credentials (tasks/_storage.py), the task receives the block's *name*
(or the file's path), never the identity: Prefect records parameters. The
identity reaches the core as a ``walship.envelope.Keyring``, whose repr
shows only where it came from.
"""

from pathlib import Path

from prefect.blocks.system import Secret

from walship.envelope import Keyring
from walship.errors import UsageError

__all__ = ["load_keys"]


def load_keys(identity_block: str | None = None, identity_file: Path | None = None) -> Keyring | None:
    """The identities of ``identity_block`` (a Secret block's name), else of ``identity_file``; None if neither."""
    if identity_block:
        try:
            block = Secret.load(identity_block)
        except ValueError:
            raise UsageError(
                f"secret block {identity_block!r} does not exist: create a 'Secret' block of that name holding "
                "the age identity file's content (docs/OPERATIONS.md) or fix the age_identity_block parameter"
            ) from None
        assert isinstance(block, Secret)  # the sync variant: tasks here are sync
        return Keyring.from_text(str(block.get()), f"secret block {identity_block!r}")
    if identity_file is not None:
        return Keyring.from_file(identity_file)
    return None
