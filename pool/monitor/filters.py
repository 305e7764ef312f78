"""Filter expressions over a queue's jobs: ONE parser and ONE matcher, used by ma-top's `/` and by
`ma-worker jobs`. No Textual here.

    name=invoice.generate data.organizationId=org_acme reason~timeout attempts>=3 age>10m

Terms are separated by whitespace and all must hold (and). A term is `FIELD OP VALUE`:

- FIELD: `name`, `id`, `reason` (the failed reason), `attempts` (attempts made), `age` (now - the job's
  timestamp), or `data.<dotted.path>` into the job's JSON data (`data.items.0.id` indexes a list).
- OP: `=` `!=`; `~` `!~` (substring, case-insensitive; an unquoted `/regex/` is a regular expression
  searched for); `>` `>=` `<` `<=` (numeric: `attempts`, `age`, `id`, `data.*`). `attempts` and `age`
  take only `=` `!=` and the numeric ones; `age` takes durations `500ms 30s 10m 2h 1d` (a bare number is
  seconds).
- VALUE: a bare word, or quoted "..." / '...' (spaces inside, backslash escapes; quoted text is always
  literal, never a regex). `data.x=42` matches the number 42 and the string "42"; `data.flag=true` the
  boolean and the string; `data.x=null` a JSON null.
- A field the job does not have (a missing data path, no failed reason): `=`, `~` and the numeric operators
  never match it; `!=` and `!~` always do.

An empty expression matches every job. A bad one raises `FilterError` naming the token and its 0-based
position (`attempts>>3: unknown operator at column 9 ('>>')`, columns 1-based in the message).

Hand tokenizer, not lark/pyparsing: the grammar is one regex per term, and our errors must name the
user's token and column, which a generic parser's errors would have to be translated into anyway.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SIMPLE_FIELDS = ("name", "id", "reason", "attempts", "age")
NUMERIC_FIELDS = ("attempts", "age")
TEXT_ONLY_FIELDS = ("name", "reason")
OPERATORS = ("=", "!=", "~", "!~", ">", ">=", "<", "<=")
NUMERIC_OPS = (">", ">=", "<", "<=")
BASE_HASH_FIELDS = ("name", "timestamp", "atm", "failedReason")
"""The job hash fields every search reads (what a match shows); `data` only when a term needs it."""

_FIELD = re.compile(r"[^\s=!~<>\"']+")
_OP = re.compile(r"[=!~<>]+")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
_MISSING = object()


class FilterError(ValueError):
    """A bad expression: `position` is the 0-based offset of the bad `token` in the expression."""

    def __init__(self, expression: str, position: int, token: str, problem: str) -> None:
        self.expression = expression
        self.position = position
        self.token = token
        self.problem = problem
        super().__init__(f"{expression}: {problem} at column {position + 1} ({token!r})")


@dataclass(frozen=True)
class JobFields:
    """What a filter reads of one job, built from BullMQ's job hash (`from_hash`)."""

    id: str
    name: str
    data: Any
    failed_reason: str | None
    attempts_made: int
    timestamp: int
    state: str = ""

    @classmethod
    def from_hash(cls, job_id: str, state: str, fields: Mapping[str, str | None]) -> JobFields:
        """From an HMGET/HGETALL of the job hash; `data` that is not JSON is kept as its text."""
        raw = fields.get("data")
        data: Any = None
        if raw is not None:
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw
        return cls(
            job_id,
            fields.get("name") or "",
            data,
            fields.get("failedReason") or None,
            int(fields.get("atm") or 0),
            int(fields.get("timestamp") or 0),
            state,
        )


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str
    quoted: bool
    number: float | None = None
    """The value as a number (ms for `age`) when it reads as one."""
    regex: re.Pattern[str] | None = None

    @property
    def text(self) -> str:
        return f"{self.field}{self.op}{_quote(self.value) if self.quoted else self.value}"

    def matches(self, job: JobFields, now_ms: int) -> bool:
        actual = field_value(job, self.field, now_ms)
        negated = self.op in ("!=", "!~")
        if actual is _MISSING:
            return negated
        if self.op in ("=", "!="):
            return _equals(actual, self) != negated
        if self.op in ("~", "!~"):
            text = _as_text(actual)
            found = bool(self.regex.search(text)) if self.regex else self.value.lower() in text.lower()
            return found != negated
        number = _as_number(actual)
        if number is None or self.number is None:
            return False
        return {
            ">": number > self.number,
            ">=": number >= self.number,
            "<": number < self.number,
            "<=": number <= self.number,
        }[self.op]


@dataclass(frozen=True)
class Filter:
    terms: tuple[Term, ...]

    @property
    def text(self) -> str:
        """The normalized expression (single spaces, canonical quoting): what the journal records."""
        return " ".join(t.text for t in self.terms)

    @property
    def fields_needed(self) -> tuple[str, ...]:
        """The job hash fields a search must read: `data` only when a `data.` term exists."""
        needs_data = any(t.field.startswith("data.") for t in self.terms)
        return BASE_HASH_FIELDS + (("data",) if needs_data else ())

    def matches(self, job: JobFields, now_ms: int) -> bool:
        return all(t.matches(job, now_ms) for t in self.terms)


def field_value(job: JobFields, field: str, now_ms: int) -> Any:
    """A field of a job (`name`, `data.a.0.b`, ...), or the module's missing marker; also used by
    `top_values`, so the two agree on what a field path means."""
    if field == "name":
        return job.name
    if field == "id":
        return job.id
    if field == "reason":
        return job.failed_reason if job.failed_reason else _MISSING
    if field == "attempts":
        return job.attempts_made
    if field == "age":
        return now_ms - job.timestamp
    value = job.data
    for part in field.split(".")[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def is_missing(value: Any) -> bool:
    return value is _MISSING


def display_value(value: Any) -> str:
    """A field value as `top_values` counts it: strings as they are, the rest as JSON text."""
    return "(missing)" if value is _MISSING else _as_text(value)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _equals(actual: Any, term: Term) -> bool:
    if isinstance(actual, bool):
        return term.value == ("true" if actual else "false")
    if isinstance(actual, int | float):
        return term.number is not None and float(actual) == term.number
    if actual is None:
        return term.value == "null"
    if isinstance(actual, str):
        return actual == term.value
    return _as_text(actual) == term.value


def _quote(value: str) -> str:
    if value and not re.search(r"[\s\"'\\]", value) and not (value.startswith("/") and value.endswith("/")):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse(expr: str) -> Filter:
    """Parse an expression (see the module docstring); FilterError names the bad token and its offset."""
    terms: list[Term] = []
    pos, end = 0, len(expr)
    while True:
        while pos < end and expr[pos].isspace():
            pos += 1
        if pos >= end:
            return Filter(tuple(terms))
        term, pos = _term(expr, pos)
        terms.append(term)


def _rest(expr: str, pos: int) -> str:
    match = re.compile(r"\S+").match(expr, pos)
    return match.group(0) if match else ""


def _term(expr: str, start: int) -> tuple[Term, int]:
    field_match = _FIELD.match(expr, start)
    if not field_match:
        raise FilterError(expr, start, _rest(expr, start), "expected a field")
    field = field_match.group(0)
    if field not in SIMPLE_FIELDS and not (field.startswith("data.") and all(field.split(".")[1:])):
        raise FilterError(expr, start, field, "unknown field (name, id, reason, attempts, age, data.<path>)")
    op_at = field_match.end()
    op_match = _OP.match(expr, op_at)
    if not op_match:
        rest = _rest(expr, op_at)
        at, token = (op_at, rest) if rest else (start, field)
        raise FilterError(expr, at, token, "expected an operator after the field")
    op = op_match.group(0)
    if op not in OPERATORS:
        raise FilterError(expr, op_at, op, "unknown operator")
    value_at = op_match.end()
    value, quoted, pos = _value(expr, value_at)
    if not value and not quoted:
        raise FilterError(expr, start, f"{field}{op}", "empty value")
    return _checked(expr, Term(field, op, value, quoted), value_at), pos


def _value(expr: str, pos: int) -> tuple[str, bool, int]:
    end = len(expr)
    if pos < end and expr[pos] in "\"'":
        quote, out, i = expr[pos], [], pos + 1
        while i < end and expr[i] != quote:
            if expr[i] == "\\" and i + 1 < end:
                i += 1
            out.append(expr[i])
            i += 1
        if i >= end:
            raise FilterError(expr, pos, expr[pos:], "unterminated quote")
        i += 1
        if i < end and not expr[i].isspace():
            raise FilterError(expr, i, _rest(expr, i), "expected a space after the closing quote")
        return "".join(out), True, i
    i = pos
    while i < end and not expr[i].isspace():
        i += 1
    return expr[pos:i], False, i


def _checked(expr: str, term: Term, at: int) -> Term:
    """Interpret the value for the field and operator: a number, a duration, a regex."""
    field, op, value = term.field, term.op, term.value
    shown = term.text[len(field) + len(op) :]
    if field in NUMERIC_FIELDS and op in ("~", "!~"):
        raise FilterError(expr, at - len(op), op, f"{field} is a number: use = != > >= < <=")
    if field in TEXT_ONLY_FIELDS and op in NUMERIC_OPS:
        raise FilterError(expr, at - len(op), op, f"{field} is text: use = != ~ !~")
    if field == "age":
        duration = _DURATION.fullmatch(value)
        if not duration:
            raise FilterError(expr, at, shown, "not a duration (500ms 30s 10m 2h 1d)")
        age_ms = float(duration.group(1)) * _UNIT_MS[duration.group(2)]
        return Term(field, op, value, term.quoted, age_ms)
    number = _as_number(value)
    if number is None and (op in NUMERIC_OPS or field == "attempts"):
        raise FilterError(expr, at, shown, "not a number")
    regex = None
    if op in ("~", "!~") and not term.quoted and len(value) >= 2 and value[0] == value[-1] == "/":
        try:
            regex = re.compile(value[1:-1], re.IGNORECASE)
        except re.error as error:
            raise FilterError(expr, at, shown, f"bad regex ({error})") from None
    return Term(field, op, value, term.quoted, number, regex)
