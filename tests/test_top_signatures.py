"""Failure signatures (pool/monitor/queries.py `normalize`): what differs between two failures' causes stays
(HTTP statuses, exception types), what differs between two instances of one cause goes (ids, counts,
durations, times). The reasons are the handlers' own shapes (`raise ...Error(f"...")` in handlers/)."""

from __future__ import annotations

import json
import re

import pytest

from pool.contracts import bull_key
from pool.monitor.queries import failure_groups, normalize


def groups(*reasons: str) -> int:
    return len({normalize(r) for r in reasons})


def test_identity_429_500_and_503_are_three_causes_not_one():
    # handlers/clients/identity.py: ThrottledError / IdentityUnavailable(f"identity answered {status} to {what}")
    assert normalize("identity answered 429 to organization org_acme") == (
        "identity answered 429 to organization <id>"
    )
    reasons = [
        "identity answered 429 to organization org_acme",
        "identity answered 500 to organization org_acme",
        "identity answered 503 to organization org_acme",
        "identity answered 503 to organization org_globex",  # same cause, another organization
    ]
    assert groups(*reasons) == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # identity._check_auth_answer: TokenRefused(f"identity refused {what} ({status} {code})")
        (
            "identity refused the worker's service key (401 invalid_credentials)",
            "identity refused the worker's service key (403 forbidden)",
        ),
        # identity.call: PermanentError(f"identity rejected {what}: {status} {code}")
        (
            "identity rejected POST /v1/admin/users/usr_7f3a/activate: 400 invalid_state",
            "identity rejected POST /v1/admin/users/usr_7f3a/activate: 409 conflict",
        ),
        # billing.stripe_error: PermanentError(f"Stripe refused {what}: {http_status} {code} {message}")
        (
            "Stripe refused charge of invoice INV-2024-0007: 402 card_declined Your card was declined.",
            "Stripe refused charge of invoice INV-2024-0007: 400 parameter_missing Missing amount.",
        ),
        # billing.stripe_error: StripeUnavailable(f"Stripe answered {http_status} to {what}")
        (
            "Stripe answered 500 to charge of invoice INV-2024-0007",
            "Stripe answered 502 to charge of invoice X-1",
        ),
        # supabase: PermanentError(f"supabase refused get user: {status}") and the service key's (401)
        ("supabase refused get user: 404", "supabase refused get user: 422"),
        ("supabase refused the service role key (401)", "supabase refused the service role key (403)"),
        # httpx's raise_for_status and Node's axios, as other producers' workers word them
        (
            "Server error '503 Service Unavailable' for url 'http://identity:8080/v1/organizations/org_a'",
            "Server error '502 Bad Gateway' for url 'http://identity:8080/v1/organizations/org_a'",
        ),
        ("Request failed with status code 500", "Request failed with status code 504"),
    ],
)
def test_each_http_status_is_its_own_signature(first, second):
    assert normalize(first) != normalize(second)
    status = re.findall(r"\b[1-5]\d\d\b", first)[0]
    assert status in normalize(first)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # identity/supabase._send: IdentityUnavailable(f"... unreachable: {type(error).__name__}")
        (
            "identity GET /v1/organizations/org_acme unreachable: ConnectError",
            "identity GET /v1/organizations/org_acme unreachable: RemoteProtocolError",
        ),
        # billing.stripe_error: StripeUnavailable(f"Stripe unavailable for {what}: {type(error).__name__}")
        (
            "Stripe unavailable for charge of invoice INV-2024-0007: APIConnectionError",
            "Stripe unavailable for charge of invoice INV-2024-0007: RateLimitError",
        ),
        # pool/worker.py: UnrecoverableError(f"could not read the job ...: {error!r}")
        (
            "could not read the job fetched after a completion: KeyError('data')",
            "could not read the job fetched after a completion: JSONDecodeError('Expecting value')",
        ),
        # names with digits or a module path survive too
        ("S3UploadFailedError: upload of export-77 failed", "OSError: upload of export-77 failed"),
        ("http_client.RemoteDisconnected: closed", "http_client.IncompleteRead: closed"),
    ],
)
def test_each_exception_type_is_its_own_signature(first, second):
    assert normalize(first) != normalize(second)


@pytest.mark.parametrize(
    ("reasons", "signature"),
    [
        (  # ids: lookups.py
            [
                "tenant org_acme_t1 is not in organization org_acme; refused",
                "tenant t_42 is not in organization org_x; refused",
            ],
            "tenant <id> is not in organization <id>; refused",
        ),
        (  # a number of items: super_admin_bulk.py (the failed count is not a status, though it reads 500)
            [
                "every item of bulk job bulk-7 failed (500): usr_1: identity answered 503 to activate usr_1",
                "every item of bulk job bulk-9 failed (3): usr_8: identity answered 503 to activate usr_8",
            ],
            "every item of bulk job <id> failed (<n>): <id>: identity answered 503 to activate <id>",
        ),
        (  # selection.py
            [
                "filter matches more than 100000 users; narrow it",
                "filter matches more than 5000 users; narrow it",
            ],
            "filter matches more than <n> users; narrow it",
        ),
        (  # payment retries: billing_payment_sync.py
            [
                "payment of invoice INV-2024-0007 declined (card_declined) on attempt 2; recorded on the invoice",
                "payment of invoice INV-2024-0011 declined (card_declined) on attempt 5; recorded on the invoice",
            ],
            "payment of invoice <id> declined (<id>) on attempt <n>; recorded on the invoice",
        ),
        (  # durations, as Node peers (axios) and our own outage messages word them
            ["timeout of 30000ms exceeded", "timeout of 5000 ms exceeded"],
            "timeout of <duration> exceeded",
        ),
        (
            ["identity still down after 9.8s", "identity still down after 12s"],
            "identity still down after <duration>",
        ),
        (  # timestamps
            [
                "renewal for period ending 2024-09-01T00:00:00.000Z already charged",
                "renewal for period ending 2024-10-01 00:00:00+00:00 already charged",
            ],
            "renewal for period ending <time> already charged",
        ),
    ],
)
def test_ids_counts_durations_and_times_still_normalize_away(reasons, signature):
    assert {normalize(r) for r in reasons} == {signature}


def test_a_reason_carrying_the_private_markers_cannot_confuse_normalize():
    assert normalize("odd \U000f0003 text answered 429") == "odd  text answered 429"


async def test_the_failures_view_groups_429_500_and_503_apart(redis):
    q = "billing-usage"
    trace = json.dumps(['Traceback ...\n  File "/srv/handlers/clients/identity.py", line 175, in call\n'])
    for i, status in enumerate([429, 500, 500, 503, 503, 503]):
        job_id = str(100 + i)
        await redis.hset(
            bull_key(q, job_id),
            mapping={
                "name": "usage.aggregate",
                "failedReason": f"identity answered {status} to organization org_{i}",
                "stacktrace": trace,
                "finishedOn": str(1_795_000_000_000 + i),
            },
        )
        await redis.zadd(bull_key(q, "failed"), {job_id: 1_795_000_000_000 + i})
    found = await failure_groups(redis, [q])
    assert [(g.count, g.signature) for g in found] == [
        (3, "identity answered 503 to organization <id>"),
        (2, "identity answered 500 to organization <id>"),
        (1, "identity answered 429 to organization <id>"),
    ]
