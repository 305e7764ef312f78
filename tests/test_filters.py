"""Filter expressions (pool/monitor/filters.py): every operator, quoting, nested paths, missing fields, each
bad expression's error naming its token and position, and a property test against a plain reference."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.monitor.filters import FilterError, JobFields, parse

NOW = 1_800_000_000_000


def job(**kw: Any) -> JobFields:
    base: dict[str, Any] = {
        "id": "17",
        "name": "invoice.generate",
        "data": {"organizationId": "org_acme", "n": 42, "s": "42", "flag": True, "items": [{"id": "a1"}]},
        "failed_reason": "ReadTimeout: identity timed out after 5s",
        "attempts_made": 3,
        "timestamp": NOW - 15 * 60_000,
    }
    base.update(kw)
    return JobFields(**base)


def hits(expr: str, **kw: Any) -> bool:
    return parse(expr).matches(job(**kw), NOW)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", True),
        ("name=invoice.generate", True),
        ("name=invoice", False),
        ("name!=invoice", True),
        ("name~INVOICE", True),
        ("name!~invoice", False),
        ("id=17", True),
        ("id>=17", True),
        ("id<17", False),
        ("reason~timed", True),
        ("reason~/time.*out/", True),
        ("reason~/^timed/", False),
        ("reason!~/^readtimeout/", False),
        ("attempts>=3", True),
        ("attempts>3", False),
        ("attempts<=3", True),
        ("attempts<3", False),
        ("attempts=3", True),
        ("attempts!=3", False),
        ("age>10m", True),
        ("age>1h", False),
        ("age<=900s", True),
        ("age<900000ms", False),
        ("age>=0.25h", True),
        ("age<1d", True),
        ("data.organizationId=org_acme", True),
        ("data.n=42", True),
        ("data.n=42.0", True),
        ("data.s=42", True),
        ("data.n>41", True),
        ("data.s>41", True),
        ("data.flag=true", True),
        ("data.flag=false", False),
        ("data.items.0.id=a1", True),
        ("data.items.1.id=a1", False),
        ("data.items~a1", True),
        ("name=invoice.generate attempts>=3 data.organizationId=org_acme", True),
        ("name=invoice.generate attempts>3", False),
    ],
)
def test_every_operator_holds_as_documented(expr: str, expected: bool) -> None:
    assert hits(expr) is expected


def test_a_missing_field_never_equals_and_always_differs() -> None:
    for expr in (
        "data.nope=x",
        "data.items.5.id=a1",
        "data.n.deeper=1",
        "reason=x",
        "data.nope~x",
        "data.x>1",
    ):
        assert not hits(expr, failed_reason=None), expr
    for expr in ("data.nope!=x", "data.items.5.id!=a1", "reason!=x", "data.nope!~x"):
        assert hits(expr, failed_reason=None), expr
    assert hits("data.x=null", data={"x": None})
    assert not hits("data.x=null", data={})


def test_quoted_values_keep_spaces_and_escapes() -> None:
    reason = 'card "4242" declined: it\'s expired'
    assert hits('reason~"declined: it\'s"', failed_reason=reason)
    assert hits("reason~'\"4242\" declined'", failed_reason=reason)
    assert hits(r'reason="card \"4242\" declined: it' + "'s expired\"", failed_reason=reason)
    assert hits('data.title="a b  c"', data={"title": "a b  c"})
    assert hits('name=""', name="")
    assert not hits('reason~"/time.*out/"')  # quoted text is literal, never a regex


def test_the_normalized_text_reparses_to_the_same_filter() -> None:
    flt = parse(r"  name=a   reason~'two words'  data.x>=3 reason~/a\sb?/ ")
    assert flt.text == r'name=a reason~"two words" data.x>=3 reason~/a\sb?/'
    assert parse(flt.text) == flt
    assert parse('name="x"').text == "name=x"
    assert parse('reason~"/x/"').text == 'reason~"/x/"'


def test_data_is_read_only_when_a_data_term_exists() -> None:
    assert "data" not in parse("name=a reason~x").fields_needed
    assert "data" in parse("name=a data.x=1").fields_needed


@pytest.mark.parametrize(
    ("expr", "position", "token", "problem"),
    [
        ("attempts>>3", 8, ">>", "unknown operator"),
        ("name=a colour=red", 7, "colour", "unknown field"),
        ("data.=1", 0, "data.", "unknown field"),
        ("reason~/(unclosed/", 7, "/(unclosed/", "bad regex"),
        ("attempts>three", 9, "three", "not a number"),
        ("age>10 minutes", 7, "minutes", "unknown field"),
        ("age>soon", 4, "soon", "not a duration"),
        ("data.x>big", 7, "big", "not a number"),
        ("name= attempts>1", 0, "name=", "empty value"),
        ('name="unterminated', 5, '"unterminated', "unterminated quote"),
        ("name", 0, "name", "expected an operator"),
        ("=x", 0, "=x", "expected a field"),
        ("name~a attempts~3", 15, "~", "attempts is a number"),
        ("reason>3", 6, ">", "reason is text"),
        ('name="a"b', 8, "b", "expected a space after the closing quote"),
    ],
)
def test_each_bad_expression_names_its_token_and_position(
    expr: str, position: int, token: str, problem: str
) -> None:
    with pytest.raises(FilterError) as caught:
        parse(expr)
    error = caught.value
    assert (error.position, error.token) == (position, token)
    assert problem in str(error)
    assert str(error).startswith(f"{expr}: ")
    assert f"at column {position + 1} ({token!r})" in str(error)
    assert isinstance(error, ValueError)


def test_the_issues_example_error_reads_as_promised() -> None:
    with pytest.raises(FilterError, match=re.escape("attempts>>3: unknown operator at column 9 ('>>')")):
        parse("attempts>>3")


# -- property: the matcher agrees with a plain Python reference -------------------------------------------

WORDS = ["", "a", "ab", "A b", "42", "7", "true", "false", "null", "x'y", 'q"z', "/a/"]
KEYS = ["org", "n", "flag", "tags"]
scalars = st.one_of(
    st.sampled_from(WORDS), st.integers(-3, 50), st.sampled_from([7, 42, 42.0, 1.5]), st.booleans(), st.none()
)
values = st.one_of(scalars, scalars, st.lists(scalars, max_size=3), st.fixed_dictionaries({"org": scalars}))
datas = st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, values))
jobs = st.builds(
    JobFields,
    id=st.sampled_from(["1", "7", "42", "abc"]),
    name=st.sampled_from(["a", "ab", "A b", "invoice.generate"]),
    data=datas,
    failed_reason=st.one_of(st.none(), st.sampled_from(["a", "timeout b", "A b"])),
    attempts_made=st.integers(0, 6),
    timestamp=st.integers(NOW - 3 * 3_600_000, NOW),
)
paths = st.one_of(
    st.sampled_from(["name", "id", "reason"]),
    st.sampled_from(KEYS).map(lambda k: f"data.{k}"),
    st.lists(st.sampled_from([*KEYS, "0", "1"]), min_size=1, max_size=3).map(lambda p: "data." + ".".join(p)),
)


def render(value: str) -> str:
    if value and not re.search(r"[\s\"'\\]", value) and not value.startswith("/"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ref_get(j: JobFields, field: str, now: int) -> tuple[bool, Any]:
    if field == "name":
        return True, j.name
    if field == "id":
        return True, j.id
    if field == "reason":
        return (j.failed_reason is not None and j.failed_reason != ""), j.failed_reason
    if field == "attempts":
        return True, j.attempts_made
    if field == "age":
        return True, now - j.timestamp
    value: Any = j.data
    for part in field.split(".")[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def ref_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), sort_keys=True)


def ref_num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v) if isinstance(v, str) else None
    except ValueError:
        return None


def ref_term(j: JobFields, field: str, op: str, value: str, now: int) -> bool:
    present, actual = ref_get(j, field, now)
    if not present:
        return op in ("!=", "!~")
    if op in ("=", "!="):
        if isinstance(actual, bool):
            same = value == str(actual).lower()
        elif isinstance(actual, int | float):
            same = ref_num(value) == float(actual)
        elif actual is None:
            same = value == "null"
        else:
            same = ref_text(actual) == value
        return same if op == "=" else not same
    if op in ("~", "!~"):
        found = value.lower() in ref_text(actual).lower()
        return found if op == "~" else not found
    a, b = ref_num(actual), ref_num(value)
    if a is None or b is None:
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def term_for(draw: st.DrawFn, j: JobFields) -> tuple[str, str, str]:
    """A random term, its value often taken from the job itself (so equalities and substrings do hit)."""
    own_keys = [f"data.{k}" for k in sorted(j.data)]
    field = draw(
        st.one_of(st.sampled_from(own_keys or ["data.org"]), paths, st.sampled_from(["attempts", "age"]))
    )
    if field in ("attempts", "age"):
        op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]))
        n = draw(st.integers(0, 6))
        return field, op, (f"{n * 20}m" if field == "age" else str(n))
    op = draw(st.sampled_from(["=", "!=", "~", "!~"] + ([] if field in ("name", "reason") else [">", "<="])))
    present, actual = ref_get(j, field, NOW)
    own = ref_text(actual) if present and not isinstance(actual, dict | list) else "a"
    number = ref_num(actual) if present else None
    if number is not None and number.is_integer() and not isinstance(actual, str):
        own = draw(st.sampled_from([own, str(int(number)), str(number)]))  # 42 is 42.0 is "42"
    if op in (">", "<="):
        return (
            field,
            op,
            draw(st.sampled_from(["7", "42", "0", "-1", own if ref_num(own) is not None else "1"])),
        )
    if op in ("~", "!~") and own:
        cut = draw(st.integers(0, len(own) - 1))
        own = draw(st.sampled_from([own[cut:], own[:cut] or own, own.upper()]))
    return field, op, draw(st.one_of(st.just(own), st.sampled_from(WORDS)))


@settings(max_examples=1000, deadline=None)
@given(j=jobs, data=st.data())
def test_matches_agrees_with_a_plain_reference(j: JobFields, data: st.DataObject) -> None:
    ts = [term_for(data.draw, j) for _ in range(data.draw(st.integers(0, 4)))]
    expr = " ".join(f"{f}{op}{render(v)}" for f, op, v in ts)
    expected = all(ref_age(j, op, v) if f == "age" else ref_term(j, f, op, v, NOW) for f, op, v in ts)
    flt = parse(expr)
    assert flt.matches(j, NOW) is expected, expr
    assert parse(flt.text).matches(j, NOW) is expected, flt.text


def ref_age(j: JobFields, op: str, value: str) -> bool:
    limit = int(value[:-1]) * 60_000
    age = NOW - j.timestamp
    return {"=": age == limit, "!=": age != limit, ">": age > limit, ">=": age >= limit}.get(
        op, age < limit if op == "<" else age <= limit
    )
