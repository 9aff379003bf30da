#!/usr/bin/env bash
# One-off initialisation for the bevis deployment, run by the airflow-init service after
# the official entrypoint has migrated Airflow's metadata database (_AIRFLOW_DB_MIGRATE).
# Idempotent: safe to run on every `docker compose up`.
#
#  1. the shared run-data folder (BEVIS_DATA_DIR) and the SoftHSM token folder on it;
#  2. every bevis schema (sources, ledger, reporting) — `bevis db migrate`;
#  3. development signing keys, only when BEVIS_INIT_DEV_KEYS=true and none exist yet
#     (production mounts real keys or uses the HSM: BEVIS_KEY_PROVIDER=pkcs11);
#  4. the Airflow pools the DAGs use, created when missing (an operator's later
#     `airflow pools set` is kept).
set -euo pipefail

data_dir="${BEVIS_DATA_DIR:?BEVIS_DATA_DIR must be set}"
mkdir -p "${data_dir}" "${data_dir}/softhsm/tokens"
echo "bevis-init: run data in ${data_dir}"

bevis db migrate
echo "bevis-init: bevis schemas migrated"

if [[ "${BEVIS_INIT_DEV_KEYS:-false}" == "true" ]]; then
    bevis keys init-dev >/dev/null
    echo "bevis-init: development keys present in ${BEVIS_KEY_DIR:-${data_dir}/keys}"
fi

# One Python process (Airflow's import is the slow part): create the missing pools only.
python - <<'PY'
from airflow.models.pool import Pool

from jobs.devtools.airflow_local import POOLS

for name, (slots, description) in POOLS.items():
    if Pool.get_pool(name) is None:
        Pool.create_or_update_pool(name, slots, description, include_deferred=False)
        print(f"bevis-init: pool {name} created with {slots} slots")
    else:
        print(f"bevis-init: pool {name} exists (kept)")
PY
echo "bevis-init: done"
