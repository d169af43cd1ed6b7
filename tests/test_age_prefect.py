"""age under a real Prefect API: recipients as a parameter, the identity from a Secret block, never recorded."""

from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from pyrage import x25519

from bench.workload import content_digest
from flows.restore import restore_flow
from flows.snapshot import snapshot_flow
from flows.verify import verify_flow
from tests.prefect_api import artifacts, flow_run, run_id
from tests.test_prefect_citizen import _logs
from walship.errors import IdentityNeededError


@pytest.mark.usefixtures("prefect_api")
def test_identity_from_a_secret_block_is_never_recorded(database: Path, tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    secret = str(identity)
    Secret(value=f"# the service's key\n{secret}\n").save("walship-age-test", overwrite=True)
    replica = f"file://{tmp_path / 'replica'}"
    taken = snapshot_flow(
        database=database, replica=replica, age_recipients=[str(identity.to_public())], return_state=True
    )
    assert taken.is_completed(), taken

    output = tmp_path / "restored.db"
    refused = restore_flow(replica=replica, output=output, return_state=True)
    assert refused.is_failed()
    with pytest.raises(IdentityNeededError):
        refused.result()
    restored = restore_flow(replica=replica, output=output, age_identity_block="walship-age-test", return_state=True)
    assert restored.is_completed(), restored
    assert content_digest(output) == content_digest(database)
    drill = verify_flow(replica=replica, age_identity_block="walship-age-test", return_state=True)
    assert drill.is_completed(), drill

    for run in (taken, restored, drill):
        recorded = [str(flow_run(run_id(run)).parameters), *(a.data for a in artifacts(run_id(run)))]
        recorded += _logs(run_id(run))
        assert not [text for text in recorded if secret in str(text)]
