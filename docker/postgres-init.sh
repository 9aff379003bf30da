#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d): the bevis role and its two databases — the NVR/orders
# sources and the issuance ledger (reporting tables live in the ledger database).
# Names can be overridden; the defaults match docker/compose.yaml.
set -euo pipefail

bevis_user="${BEVIS_DB_USER:-bevis}"
sources_db="${BEVIS_SOURCES_DB:-bevis_sources}"
ledger_db="${BEVIS_LEDGER_DB:-bevis_ledger}"

psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v user="${bevis_user}" -v password="${BEVIS_DB_PASSWORD:?BEVIS_DB_PASSWORD must be set}" \
    -v sources_db="${sources_db}" -v ledger_db="${ledger_db}" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"sources_db" OWNER :"user";
CREATE DATABASE :"ledger_db" OWNER :"user";
SQL
echo "postgres-init: role ${bevis_user}, databases ${sources_db} and ${ledger_db}"
