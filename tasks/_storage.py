"""Storage for tasks and flows: the replica opened with the credentials a Prefect block holds, if one is named.

Tasks receive the block's *name* and load it here, inside the run: the
secret never becomes a task or flow parameter (Prefect records those), and
it reaches the core as ``StorageCredentials``, whose repr masks it. Without a
block, boto3's chain (the worker's environment, profile or role) applies.

prefect-aws is imported only when a block is named: importing it loads its
ECS worker, aiobotocore and aiohttp (0.3-0.8 s measured), which a run with
the worker's own credentials never uses.
"""

from walship.errors import UsageError
from walship.storage import ObjectStore, StorageCredentials, open_store

__all__ = ["block_credentials", "open_replica"]


def block_credentials(name: str | None) -> StorageCredentials | None:
    """The keys, region and endpoint of the prefect-aws ``AwsCredentials`` block ``name`` (None: boto3's chain)."""
    if not name:
        return None
    from prefect_aws import AwsCredentials  # noqa: PLC0415 - only runs that name a block pay for prefect-aws

    try:
        block = AwsCredentials.load(name)
    except ValueError:
        raise UsageError(
            f"credentials block {name!r} does not exist: create an 'AWS Credentials' block of that name "
            "(Blocks in the Prefect UI, see docs/OPERATIONS.md) or fix the credentials_block parameter"
        ) from None
    assert isinstance(block, AwsCredentials)  # the sync variant: tasks and flows here are sync
    # Through the block's own session, so a profile or an assumed role in the block works too.
    session = block.get_boto3_session()
    found = session.get_credentials()
    keys = found.get_frozen_credentials() if found is not None else None
    parameters = block.aws_client_parameters
    return StorageCredentials(
        access_key_id=keys.access_key if keys else None,
        secret_access_key=keys.secret_key if keys else None,
        session_token=keys.token if keys else None,
        region=session.region_name,
        endpoint=parameters.endpoint_url if parameters else None,
        source=f"credentials of block {name!r}",
    )


def open_replica(replica: str, credentials_block: str | None = None) -> ObjectStore:
    """``open_store`` with the block's credentials when ``credentials_block`` names one."""
    return open_store(replica, block_credentials(credentials_block))
