"""
### dcc_revocation — revocation batches to the EU gateway, daily

`upload` (new revocations into new batches, one per kid and hash type, at most 1000
entries; every live batch the gateway does not hold yet is uploaded, its batch id recorded)
→ `delete_expired` (uploaded batches whose `expires` has passed are deleted at the gateway).

* Revocations come from `bevis certificates revoke UVCI … --reason …`; this DAG only moves
  them. Everything it does, `bevis revocation upload` and `bevis revocation delete` do too.
* A rerun uploads nothing twice: the ledger holds the gateway's batch ids, and a batch whose
  upload was interrupted is looked for at the gateway before it is sent again.
* Settings: `BEVIS_GATEWAY_URL`, `BEVIS_GATEWAY_CA_BUNDLE`, the TLS authentication and upload
  certificates (`BEVIS_GATEWAY_CLIENT_CERT`, `BEVIS_GATEWAY_UPLOAD_CERT`, keys beside them).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.timetables.trigger import CronTriggerTimetable

from dags._common import DEFAULT_ARGS, RETRY_POLICY


@dag(
    dag_id="dcc_revocation",
    description="Upload new revocation batches to the EU gateway; delete expired ones",
    schedule=CronTriggerTimetable("30 5 * * *", timezone="Europe/Stockholm"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args={**DEFAULT_ARGS, "retry_policy": RETRY_POLICY},
    tags=["bevis", "dcc", "revocation"],
    doc_md=__doc__,
)
def dcc_revocation():
    @task
    def upload() -> dict:
        from jobs.gateway.revocation import upload as do_upload

        result = do_upload()
        return {
            "uploaded": [u["gateway_batch_id"] for u in result["uploaded"]],
            "adopted": [a["gateway_batch_id"] for a in result["adopted"]],
            "missing_hashes": len(result["missing_hashes"]),
        }

    @task
    def delete_expired() -> list[str]:
        from jobs.gateway.revocation import delete_expired as do_delete

        return [d["gateway_batch_id"] for d in do_delete()["deleted"]]

    upload() >> delete_expired()


dcc_revocation()
