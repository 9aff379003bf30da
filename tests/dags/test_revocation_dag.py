"""dcc_revocation through real Airflow (`dag.test()` in a child process) against the gateway
simulator over real mutual TLS: the first run uploads the revoked certificates' batches,
the second uploads nothing (the ledger remembers the gateway's batch ids)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def test_dcc_revocation_uploads_once(bevis_env: Path, tmp_path: Path) -> None:
    from jobs.devtools import airflow_local
    from jobs.gateway.simulator import development_parties, running_gateway
    from jobs.ledger import revocations as rv
    from jobs.settings import get_settings
    from signing.keys import init_dev_keys
    from tests.jobs.ledger.test_revocations import _certificates

    s = get_settings()
    init_dev_keys(s.resolved_key_dir())
    uvcis = _certificates(s, 3)
    rv.revoke(uvcis, "wrong_result", who="ops", settings=s)
    home = tmp_path / "airflow"
    with running_gateway(tmp_path / "gw", development_parties(s.resolved_key_dir())) as gw:
        env = airflow_local.airflow_env(
            home, {"BEVIS_GATEWAY_URL": gw.url, "BEVIS_GATEWAY_CA_BUNDLE": str(gw.ca)}
        )
        airflow_local.prepare(home, env)
        for attempt in (1, 2):
            result = airflow_local.run_dag_test(
                "dcc_revocation",
                {},
                env,
                tmp_path / f"result{attempt}.json",
                tmp_path / "airflow.log",
            )
            assert result["state"] == "success", (
                result,
                (tmp_path / "airflow.log").read_text()[-3000:],
            )
            assert result["task_states"] == {"upload": "success", "delete_expired": "success"}
            assert gw.store.count_batches() == 3  # one batch per hash type, uploaded once
    rows = rv.batches(s)
    assert len(rows) == 3 and all(r.batch_id and r.uploaded_at for r in rows)
