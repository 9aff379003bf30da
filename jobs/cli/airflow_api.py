"""A small client of the Airflow 3 REST API, for one job: clear exactly the mapped task
instances of some batches so that the scheduler runs them again.

Why not ``airflow tasks clear``? In Airflow 3.3 its ``-t`` is a substring match and it has
no run or map-index option, so it cannot target "sign of batch 7 in run X". The REST
endpoint ``POST /api/v2/dags/{dag_id}/clearTaskInstances`` takes ``dag_run_id`` and
``task_ids`` as ``[task_id, map_index]`` pairs; we call it with ``dry_run`` first and check
that it would clear exactly what we asked for.

Batches are found by their id, never by assuming ``map_index == seq``: the run's task
instances are listed and a batch's map index is the one whose ``rendered_map_index`` (the
DAG sets ``map_index_template`` to the batch id) or whose rendered arguments
(``rendered_fields``, e.g. ``op_kwargs.batch_id``) name the batch. Tasks mapped over the same
list share the map index, so the batch's not-yet-successful downstream task instances at that
index (never rendered, e.g. ``upstream_failed``) are cleared along with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from jobs.log import get_logger

log = get_logger(__name__)

PAGE = 100


class AirflowApiError(RuntimeError):
    """The Airflow API refused or failed; the message says which call and why."""


@dataclass
class ClearPlan:
    """What a clear would touch, per batch."""

    dag_id: str
    dag_run_id: str
    pairs: list[tuple[str, int]] = field(default_factory=list)
    batches: dict[str, int] = field(default_factory=dict)  # batch id → map index
    not_found: list[str] = field(default_factory=list)


def _names(value: Any, batch_ids: set[str]) -> set[str]:
    """The batch ids mentioned (as exact strings) anywhere in a rendered value."""
    if isinstance(value, str):
        return {value} & batch_ids
    if isinstance(value, dict):
        return set().union(*(_names(v, batch_ids) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_names(v, batch_ids) for v in value)) if value else set()
    return set()


def batches_of_ti(ti: dict[str, Any], batch_ids: set[str]) -> set[str]:
    """Which of ``batch_ids`` a task instance is working on, by its rendered map index or
    its rendered arguments."""
    rendered = ti.get("rendered_map_index")
    if rendered in batch_ids:
        return {rendered}
    return _names(ti.get("rendered_fields") or {}, batch_ids)


class AirflowClient:
    """JWT-authenticated client of one Airflow API server."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Any = None) -> AirflowClient:
        from jobs.settings import get_settings

        s = settings or get_settings()
        pw = s.airflow_password.get_secret_value() if s.airflow_password else None
        return cls(s.airflow_api_url, s.airflow_username, pw)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (username/password)."""
        if self._token is None:
            if not self.username or self.password is None:
                raise AirflowApiError(
                    "Airflow API credentials missing: set BEVIS_AIRFLOW_USERNAME and "
                    "BEVIS_AIRFLOW_PASSWORD"
                )
            r = self._send(
                "POST",
                "/auth/token",
                json={"username": self.username, "password": self.password},
                auth=False,
            )
            self._token = r.json().get("access_token")
            if not self._token:
                raise AirflowApiError("POST /auth/token returned no access_token")
        return self._token

    def _send(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            r = self._http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise AirflowApiError(
                f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}"
            ) from exc
        if r.status_code == 401 and auth and self._token is not None:
            self._token = None  # expired: one fresh token, one retry
            headers["Authorization"] = f"Bearer {self.token()}"
            r = self._http.request(method, path, headers=headers, **kw)
        if r.status_code >= 400:
            detail = r.text[:300]
            raise AirflowApiError(f"{method} {path} → HTTP {r.status_code}: {detail}")
        return r

    # ------------------------------------------------------------------ endpoints
    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """All runs of a DAG (paged)."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._send(
                "GET",
                f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
                params={"limit": PAGE, "offset": offset, "order_by": "-run_after"},
            ).json()
            items = page.get("dag_runs", [])
            out.extend(items)
            offset += len(items)
            if not items or offset >= (page.get("total_entries") or 0):
                return out

    def task_instances(self, dag_id: str, dag_run_id: str) -> list[dict[str, Any]]:
        """Every task instance of one DAG run, mapped ones included (paged)."""
        out: list[dict[str, Any]] = []
        offset = 0
        path = (
            f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(dag_run_id, safe='')}"
            "/taskInstances"
        )
        while True:
            page = self._send("GET", path, params={"limit": PAGE, "offset": offset}).json()
            items = page.get("task_instances", [])
            out.extend(items)
            offset += len(items)
            if not items or offset >= (page.get("total_entries") or 0):
                return out

    def clear_task_instances(
        self,
        dag_id: str,
        dag_run_id: str,
        pairs: Sequence[tuple[str, int]],
        *,
        dry_run: bool,
    ) -> list[dict[str, Any]]:
        """POST clearTaskInstances for exactly these [task_id, map_index] pairs of one run
        (failed or not: ``only_failed`` false, so upstream_failed ones are included)."""
        body = {
            "dry_run": dry_run,
            "dag_run_id": dag_run_id,
            "task_ids": [[t, int(i)] for t, i in pairs],
            "only_failed": False,
            "reset_dag_runs": True,
            "include_upstream": False,
            "include_downstream": False,
            "include_future": False,
            "include_past": False,
        }
        r = self._send(
            "POST", f"/api/v2/dags/{quote(dag_id, safe='')}/clearTaskInstances", json=body
        )
        return list(r.json().get("task_instances", []))

    # ------------------------------------------------------------------ the job
    def find_dag_run(self, dag_id: str, run_id: str) -> str:
        """The Airflow dag_run_id of a bevis run: a run whose id or conf names it."""
        try:  # the DAG derives the bevis run id from the dag_run_id (jobs.flow)
            from jobs.ids import airflow_run_id
        except ImportError:  # pragma: no cover
            airflow_run_id = None
        for dr in self.dag_runs(dag_id):
            conf = dr.get("conf") or {}
            names = {dr.get("dag_run_id"), conf.get("run_id"), conf.get("bevis_run_id")}
            if airflow_run_id is not None:
                names.add(airflow_run_id(dr["dag_run_id"]))
            if run_id in names:
                return dr["dag_run_id"]
        raise AirflowApiError(
            f"no run of DAG {dag_id} belongs to bevis run {run_id}; pass --dag-run-id"
        )

    def plan_clear(self, dag_id: str, dag_run_id: str, batch_ids: Iterable[str]) -> ClearPlan:
        """Find the task instances of these batches in one DAG run: their map index from the
        task instances that name them, then every mapped task instance at that index that
        is not successful and names no other batch."""
        wanted = set(batch_ids)
        tis = self.task_instances(dag_id, dag_run_id)
        index_of: dict[str, int] = {}
        for ti in tis:
            if ti.get("map_index", -1) < 0:
                continue
            for bid in batches_of_ti(ti, wanted):
                prev = index_of.setdefault(bid, ti["map_index"])
                if prev != ti["map_index"]:
                    raise AirflowApiError(
                        f"batch {bid} appears at map indexes {prev} and {ti['map_index']} in "
                        f"run {dag_run_id}; refusing to guess"
                    )
        plan = ClearPlan(dag_id, dag_run_id, batches=dict(sorted(index_of.items())))
        plan.not_found = sorted(wanted - set(index_of))
        by_index = {i: b for b, i in index_of.items()}
        for ti in sorted(tis, key=lambda t: (t.get("map_index", -1), t["task_id"])):
            idx = ti.get("map_index", -1)
            if idx not in by_index or ti.get("state") == "success":
                continue
            named = batches_of_ti(ti, wanted)
            if named and by_index[idx] not in named:
                continue  # mapped over another list: this index is another batch there
            rendered = ti.get("rendered_map_index")
            if not named and rendered not in (None, "", str(idx)):
                continue  # rendered as something else: not ours
            plan.pairs.append((ti["task_id"], idx))
        return plan

    def clear_batches(
        self, dag_id: str, dag_run_id: str, batch_ids: Iterable[str], *, execute: bool = True
    ) -> tuple[ClearPlan, list[dict[str, Any]]]:
        """Dry run first; clear for real only when the dry run lists exactly our pairs."""
        plan = self.plan_clear(dag_id, dag_run_id, batch_ids)
        if not plan.pairs:
            return plan, []
        preview = self.clear_task_instances(dag_id, dag_run_id, plan.pairs, dry_run=True)
        got = {(t.get("task_id"), t.get("map_index", -1)) for t in preview}
        extra = got - set(plan.pairs)
        if extra:
            raise AirflowApiError(
                f"the dry run would also clear {sorted(extra)}; refusing (asked for {plan.pairs})"
            )
        if not execute:
            return plan, preview
        cleared = self.clear_task_instances(dag_id, dag_run_id, plan.pairs, dry_run=False)
        log.info(
            "cleared task instances",
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            pairs=[f"{t}[{i}]" for t, i in plan.pairs],
        )
        return plan, cleared
