"""The facts the ``dcc_payload`` suite checks, from payloads.parquet.

Schema validation by ``ver`` with formats is exact (jsonschema via signing.dcc) but costs
about a millisecond per payload, a quarter of an hour at a million. Payloads of a run
differ mostly in a few personal leaves (names, date of birth, vaccination date, UVCI)
while everything else repeats. So each payload is split into a *skeleton* (the leaves
replaced by valid placeholders) and its leaves: the skeleton is validated by
``signing.dcc.schema_errors`` / ``value_set_errors`` once per distinct skeleton, and each
distinct leaf value by a validator of that leaf's own sub-schema taken from the same
vendored schema file (same keywords, same format checker). The DCC schema has no
constraint across those leaves (presence is part of the skeleton), so the result equals
validating every payload whole — a test compares the two.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

NAME_LEAVES = ("fn", "gn", "fnt", "gnt")
ENTRY_LEAVES = ("dt", "ci", "sc", "fr", "df", "du")
ENTRY_DEFS = {"v": "vaccination_entry", "t": "test_entry", "r": "recovery_entry"}
PLACEHOLDER = {
    "fn": "A",
    "gn": "A",
    "fnt": "A",
    "gnt": "A",
    "dob": "2000-01-01",
    "dt": "2021-01-01",
    "ci": "URN:UVCI:01:SE:A/A#A",
    "sc": "2021-01-01T00:00:00Z",
    "fr": "2021-01-01",
    "df": "2021-01-01",
    "du": "2021-12-31",
}
_TRANSLITERATED = None  # compiled lazily


@cache
def _schema(version: str) -> dict[str, Any]:
    from importlib import resources

    text = resources.files("signing").joinpath("data", "schema", f"{version}.json")
    return json.loads(text.read_text("utf-8"))


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


@cache
def _leaf_validator(version: str, where: str, leaf: str):
    """A jsonschema validator of one leaf's sub-schema (None: the schema sets no rule)."""
    import jsonschema

    root = _schema(version)
    defs = root.get("$defs") or root.get("definitions") or {}
    if where == "nam":
        parent = _resolve(root, root["properties"]["nam"])
    elif where == "dob":
        sub = root["properties"].get("dob")
        parent = None
    else:
        parent = _resolve(root, defs.get(ENTRY_DEFS[where], {}))
    if where != "dob":
        sub = (parent or {}).get("properties", {}).get(leaf)
    if sub is None:
        return None
    sub = _resolve(root, sub)
    cls = jsonschema.validators.validator_for(root)
    return cls(sub, format_checker=cls.FORMAT_CHECKER)


def _split(payload: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """(skeleton, leaves): string leaves replaced by placeholders; non-string leaves stay
    in the skeleton, where the schema rejects them."""
    leaves: list[tuple[str, str, str]] = []
    skeleton = dict(payload)
    nam = payload.get("nam")
    if isinstance(nam, dict):
        nam = dict(nam)
        for k in NAME_LEAVES:
            if isinstance(nam.get(k), str):
                leaves.append(("nam", k, nam[k]))
                nam[k] = PLACEHOLDER[k]
        skeleton["nam"] = nam
    if isinstance(payload.get("dob"), str):
        leaves.append(("dob", "dob", payload["dob"]))
        skeleton["dob"] = PLACEHOLDER["dob"]
    for kind in ENTRY_DEFS:
        entries = payload.get(kind)
        if not isinstance(entries, list):
            continue
        copied = []
        for e in entries:
            if isinstance(e, dict):
                e = dict(e)
                for k in ENTRY_LEAVES:
                    if isinstance(e.get(k), str):
                        leaves.append((kind, k, e[k]))
                        e[k] = PLACEHOLDER[k]
            copied.append(e)
        skeleton[kind] = copied
    return skeleton, leaves


def _names_ok(payload: dict[str, Any]) -> bool:
    import re

    global _TRANSLITERATED
    if _TRANSLITERATED is None:
        _TRANSLITERATED = re.compile(r"^[A-Z<]*$")
    nam = payload.get("nam")
    if not isinstance(nam, dict):
        return False
    present = [nam.get(k) for k in ("fnt", "gnt") if nam.get(k) is not None]
    return bool(present) and all(
        isinstance(v, str) and len(v) <= 80 and _TRANSLITERATED.match(v) for v in present
    )


def payload_facts(payload_json: list[str | None]) -> pd.DataFrame:
    """Per payload: schema_ok, value_sets_ok (NA when the JSON does not parse), the names
    check, and the certificate id inside the payload (for the UVCI checks)."""
    import pandas as pd

    from signing.dcc import schema_errors, schema_version_for, value_set_errors

    skeletons: dict[str, tuple[bool, bool]] = {}
    leaf_ok: dict[tuple[str, str, str, str], bool] = {}
    schema_ok, vs_ok, names_ok, ci = [], [], [], []
    for text in payload_json:
        try:
            payload = json.loads(text) if text is not None else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            schema_ok.append(False)
            vs_ok.append(None)
            names_ok.append(False)
            ci.append(None)
            continue
        skeleton, leaves = _split(payload)
        key = json.dumps(skeleton, sort_keys=True, ensure_ascii=False)
        verdict = skeletons.get(key)
        if verdict is None:
            verdict = (not schema_errors(skeleton), not value_set_errors(skeleton))
            skeletons[key] = verdict
        ok = verdict[0]
        ver = payload.get("ver")
        version = schema_version_for(ver) if isinstance(ver, str) else None
        if ok and version:
            for where, leaf, value in leaves:
                k = (version, where, leaf, value)
                good = leaf_ok.get(k)
                if good is None:
                    validator = _leaf_validator(version, where, leaf)
                    good = validator is None or validator.is_valid(value)
                    leaf_ok[k] = good
                if not good:
                    ok = False
                    break
        schema_ok.append(ok)
        vs_ok.append(verdict[1])
        names_ok.append(_names_ok(payload))
        entries = payload.get("v") or payload.get("t") or payload.get("r") or [{}]
        first = entries[0] if isinstance(entries, list) and entries else {}
        ci.append(first.get("ci") if isinstance(first, dict) else None)
    return pd.DataFrame(
        {
            "schema_ok": schema_ok,
            "value_sets_ok": pd.array(vs_ok, dtype="boolean"),
            "transliterated_names_ok": names_ok,
            "payload_ci": pd.array(ci, dtype="string"),
        }
    )
