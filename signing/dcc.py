"""The DCC JSON schema (every published version) and the EU value sets, vendored in
``signing/data`` (sources in the SOURCE.txt files there).

A payload is validated against the schema version its own ``ver`` names, with a format
checker, and its codes against the value sets. For issuance only *active* codes count;
for verifying certificates issued by others, membership alone.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

CURRENT_VERSION = "1.3.3"

# Which value set each coded field draws from, per entry type.
VALUE_SET_FIELDS: dict[str, dict[str, str]] = {
    "v": {
        "tg": "disease-agent-targeted",
        "vp": "vaccine-prophylaxis",
        "mp": "vaccine-medicinal-product",
        "ma": "vaccine-mah-manf",
        "co": "country-2-codes",
    },
    "t": {
        "tg": "disease-agent-targeted",
        "tt": "test-type",
        "ma": "test-manf-example",
        "tr": "test-result",
        "co": "country-2-codes",
    },
    "r": {"tg": "disease-agent-targeted", "co": "country-2-codes"},
}


def _data(*parts: str) -> Any:
    return json.loads(resources.files("signing").joinpath("data", *parts).read_text("utf-8"))


@cache
def schema_versions() -> tuple[str, ...]:
    names = resources.files("signing").joinpath("data", "schema").iterdir()
    versions = [p.name.removesuffix(".json") for p in names if p.name.endswith(".json")]
    return tuple(sorted(versions, key=lambda v: tuple(int(x) for x in v.split("."))))


def schema_version_for(ver: str) -> str | None:
    """The vendored schema that governs a payload claiming ``ver``: the exact version, or
    the newest published patch of the same major.minor line (1.3.x payloads are valid
    against their line's schema)."""
    if ver in schema_versions():
        return ver
    try:
        major, minor, _patch = (int(x) for x in ver.split("."))
    except ValueError:
        return None
    same_line = [v for v in schema_versions() if v.split(".")[:2] == [str(major), str(minor)]]
    return same_line[-1] if same_line else None


@cache
def _validator(version: str):
    import jsonschema

    schema = _data("schema", f"{version}.json")
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _governing_version(payload: Any) -> tuple[str, str | None]:
    """The vendored schema version for a payload, or why there is none (safe for logs)."""
    if not isinstance(payload, dict):
        return "", f"payload is {type(payload).__name__}, not an object"
    ver = payload.get("ver")
    if not isinstance(ver, str):
        return "", "ver: missing or not a string"
    version = schema_version_for(ver)
    if version is None:
        # quoted only when shaped like a version: a hostile ver may hold a name
        shown = f" {ver!r}" if _VERSION_SHAPE.fullmatch(ver) else ""
        return "", f"ver: unknown schema version{shown}"
    return version, None


_VERSION_SHAPE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}")


def schema_errors(payload: Any) -> list[str]:
    """Schema violations of a payload, by the schema version its ``ver`` names.

    The messages may quote the offending values (names, dates of birth): use them for
    yes/no decisions and diagnostics only; :func:`redacted_schema_errors` is for reasons
    that are stored or logged."""
    version, problem = _governing_version(payload)
    if problem:
        return [problem]
    errors = []
    for err in sorted(_validator(version).iter_errors(payload), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{where}: {err.message[:200]}")
    return errors


@cache
def valueset(name: str) -> dict[str, dict[str, Any]]:
    """The values of one value set: code → {display, active, ...}."""
    return _data("valuesets", f"{name}.json")["valueSetValues"]


@cache
def active_codes(name: str) -> frozenset[str]:
    return frozenset(code for code, v in valueset(name).items() if v.get("active", True))


def display(name: str, code: str) -> str:
    """The display name of a code (the code itself when unknown)."""
    return str(valueset(name).get(code, {}).get("display", code))


@cache
def encoding_instructions() -> dict[str, dict[str, Any]]:
    return _data("valuesets", "vaccine-encoding-instructions.json")["valueSetValues"]


def value_set_errors(payload: Any, active_only: bool = True) -> list[str]:
    """Codes of the payload that are not in their value set (or not active there)."""
    if not isinstance(payload, dict):
        return []
    errors = []
    for kind, fields in VALUE_SET_FIELDS.items():
        entries = payload.get(kind)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            for field, vs in fields.items():
                if field not in entry:
                    continue
                code = entry[field]
                values = valueset(vs)
                # the code is never quoted: a hostile payload may put a name or a birth
                # date in a coded field, and these reasons reach logs and quarantine
                if not isinstance(code, str) or code not in values:
                    # test-manf-example is an example list: unknown test manufacturers are
                    # allowed by the spec, so only vet codes of the closed sets.
                    if vs != "test-manf-example":
                        errors.append(f"{kind}/{i}/{field}: code not in value set {vs}")
                elif active_only and not values[code].get("active", True):
                    errors.append(f"{kind}/{i}/{field}: code {code!r} is not active in {vs}")
    return errors


def payload_errors(payload: Any, active_only: bool = True) -> list[str]:
    """Everything that forbids signing (or accepting) a payload: schema, then value sets."""
    # redacted: these reasons reach quarantine details and logs
    return redacted_schema_errors(payload) + value_set_errors(payload, active_only=active_only)


# --- characters no text of a DCC may hold ---------------------------------------------------

# Unicode category Cc (C0 controls, DEL, C1 controls: NUL, ESC, CR, LF ...), the
# bidirectional embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069), and
# lone surrogates (a JSON escape like \ud800 that is not Unicode text and cannot be encoded).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
SURROGATE = re.compile("[\ud800-\udfff]")
FORBIDDEN_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


# The field names of every DCC schema version: paths in reasons name these, or '?'.
DCC_FIELDS = frozenset(
    "ver nam fn fnt gn gnt dob v t r tg vp mp ma dn sd dt co is ci nm sc tr tc tt fr df du".split()  # noqa: SIM905
)


def text_problem(text: str) -> str | None:
    """What is wrong with one string (a kind of character, never the value), else None."""
    if not FORBIDDEN_TEXT.search(text):
        return None
    if SURROGATE.search(text):
        return "lone surrogate (not Unicode text)"
    if CONTROL.search(text):
        return "control character (Unicode Cc)"
    return "bidirectional control character (U+202A-U+202E, U+2066-U+2069)"


def text_problems(payload: Any, limit: int = 10) -> list[str]:
    """Strings of a payload (keys too) holding characters no DCC text may hold, by field
    path — safe for logs. Iterative (bounded by the caller's depth check)."""
    problems: list[str] = []
    stack: list[tuple[Any, str]] = [(payload, "")]
    while stack and len(problems) < limit:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                problems.append(f"{where or '(root)'}: {problem}")
        elif isinstance(item, dict):
            for k, v in item.items():
                problem = text_problem(k) if isinstance(k, str) else None
                if problem:
                    problems.append(f"{where or '(root)'}: a field name holds a {problem}")
                    continue
                key = k if k in DCC_FIELDS else "?"  # an unknown key may be anything
                stack.append((v, f"{where}/{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((v, f"{where}/{i}" if where else str(i)) for i, v in enumerate(item))
    return sorted(problems)


# --- issuance gate (signing helper) ------------------------------------------------------

_NAMED_CONSTRAINTS = frozenset(
    {
        "type",
        "pattern",
        "format",
        "maxLength",
        "minLength",
        "minimum",
        "maximum",
        "enum",
        "const",
        "minItems",
        "maxItems",
    }
)


def _redacted(err: Any) -> str:
    """A schema error naming the field and the broken rule, never the offending value
    (which may be a name or a birth date)."""
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    if err.validator == "required":
        return f"{where}: {err.message[:120]}"
    if err.validator in ("oneOf", "anyOf") and not err.absolute_path:
        return f"{where}: must hold exactly one of v, t, r (and ver, nam, dob)"
    if err.validator in _NAMED_CONSTRAINTS:
        return f"{where}: fails {err.validator} {str(err.validator_value)[:80]!r}"
    return f"{where}: fails {err.validator}"


def redacted_schema_errors(payload: Any) -> list[str]:
    """Schema violations by the payload's ``ver`` (with formats), in words safe for logs:
    field paths and rules, never the offending personal values."""
    version, problem = _governing_version(payload)
    if problem:
        return [problem]
    if _fast_valid(version, payload):
        return []
    validator = _validator(version)
    return [
        _redacted(e)
        for e in sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    ]


def issuance_problems(payload: Any) -> list[str]:
    """Why a payload may not be signed — schema by its ``ver`` (with formats) and *active*
    value sets — in words safe for logs. Empty when it may be signed."""
    errors = redacted_schema_errors(payload)
    if errors and not isinstance(payload, dict):
        return errors
    if not errors and _all_codes_active(payload):
        return []
    return errors + value_set_errors(payload, active_only=True)


@cache
def _gate_by_field() -> tuple[tuple[str, tuple[tuple[str, bool, frozenset[str]], ...]], ...]:
    """Per entry type: (field, open set?, codes) — for closed sets the active codes, for
    the open test-manf-example set the known but inactive ones."""
    out = []
    for kind, fields in VALUE_SET_FIELDS.items():
        rules = []
        for f, vs in fields.items():
            if vs == "test-manf-example":
                rules.append((f, True, frozenset(valueset(vs)) - active_codes(vs)))
            else:
                rules.append((f, False, active_codes(vs)))
        out.append((kind, tuple(rules)))
    return tuple(out)


def _all_codes_active(payload: dict[str, Any]) -> bool:
    """Hot-path twin of ``value_set_errors(payload, active_only=True) == []``."""
    for kind, rules in _gate_by_field():
        entries = payload.get(kind)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            for f, is_open, codes in rules:
                if f not in entry:
                    continue
                code = entry[f]
                if not isinstance(code, str):
                    if not is_open:
                        return False
                    continue
                if (code in codes) if is_open else (code not in codes):
                    return False
    return True


_ONE_OF_TYPES = ("v", "t", "r")


def _one_of_is_the_type_choice(schema: dict[str, Any]) -> list[str] | None:
    """The common keys when the top-level oneOf is exactly "ver/nam/dob plus one of v, t,
    r" (as in the 1.3 schemas), else None."""
    one_of = schema.get("oneOf")
    if not isinstance(one_of, list) or len(one_of) != 3:
        return None
    required = [b.get("required") if isinstance(b, dict) and len(b) == 1 else None for b in one_of]
    lists = [r for r in required if isinstance(r, list)]
    if len(lists) != len(required):
        return None
    common = [k for k in lists[0] if k not in _ONE_OF_TYPES]
    if sorted(tuple(sorted(r)) for r in lists) != sorted(
        tuple(sorted([*common, t])) for t in _ONE_OF_TYPES
    ):
        return None
    return common


@cache
def _fast_validator(version: str) -> tuple[Any, bool]:
    """The schema compiled to Python by fastjsonschema (~20x faster than jsonschema on a
    DCC), and whether the "exactly one of v, t, r" rule was lifted out of it. fastjsonschema
    speaks draft-07, which covers every keyword the DCC schemas use ($defs is only a
    JSON-pointer target); formats are delegated to jsonschema's own format checker so the
    two agree (tests/test_signing_dcc_gate.py). A top-level oneOf costs a third of the time
    (two branches fail by exception), so when it is the plain type choice it is checked
    in Python instead."""
    import fastjsonschema

    schema = dict(_data("schema", f"{version}.json"))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    common = _one_of_is_the_type_choice(schema)
    if common is not None:
        del schema["oneOf"]
        schema["required"] = sorted({*schema.get("required", []), *common})
    checker = _validator(version).format_checker
    formats = {
        name: (lambda value, name=name: checker.conforms(value, name)) for name in checker.checkers
    }
    return fastjsonschema.compile(schema, formats=formats), common is not None


def _fast_valid(version: str, payload: Any) -> bool:
    """Hot-path schema check; the reasons come from jsonschema only when it fails."""
    import fastjsonschema

    validate, lifted = _fast_validator(version)
    if lifted and (not isinstance(payload, dict) or sum(t in payload for t in _ONE_OF_TYPES) != 1):
        return False
    try:
        validate(payload)
    except fastjsonschema.JsonSchemaException:
        return False
    except Exception:  # anything odd: let jsonschema decide and explain
        return _validator(version).is_valid(payload)
    return True
