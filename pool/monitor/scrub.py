"""Secrets out of free text: what a failed reason, a stack trace, an event's message or an audit entry may carry.

`queries.redact` masks the values under secret-looking keys of structured data (a job's data); free text has no
keys, so this masks what looks like a credential wherever it stands (a Stripe key, a JWT, a bearer token,
`password=...`, the password of a URL) and every known secret value (the environment's `*SECRET*`, `*KEY*`,
`*TOKEN*`, `*PASSWORD*` variables, as the pool's log filter masks its settings' secrets). No Textual here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from pool.logs import ScrubSecrets

MASK = "***"

SECRET_NAME = r"[A-Za-z0-9_.-]*(?:secret|passw(?:or)?d|token|api[_-]?key|apikey|authorization|signature|credential|private[_-]?key|[_-]key|[a-z]Key)[A-Za-z0-9_.-]*"
"""A name that says its value is a secret: `password`, `stripeSecret`, `api_key`, `serviceRoleKey`, `X-Api-Key`."""

_PATTERNS = [
    # Stripe's keys and webhook secrets, restricted and publishable keys alike
    re.compile(r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9_]+"),
    re.compile(r"whsec_[A-Za-z0-9_]+"),
    # a JWT (a Supabase key, a session token)
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    # `Authorization: Bearer abc`, `Basic abc`
    re.compile(r"(?i)(?<=\bbearer )[A-Za-z0-9._~+/=-]+|(?<=\bbasic )[A-Za-z0-9+/=]{8,}"),
    # the password of a URL: scheme://user:password@host
    re.compile(r"(?<=://)(?:[^/\s:@]*):[^/\s@]+(?=@)"),
]
_NAMED = [
    # `token=abc`, `"password": "abc"`, `'apiKey': 'abc'`: the name stays, the value goes
    re.compile(rf"(?i)(\b{SECRET_NAME}\s*=\s*[\"']?)([^\s\"',;&}}\])]+)"),
    re.compile(rf"(?i)(\b{SECRET_NAME}[\"']?\s*:\s*[\"'])([^\"']+)"),
    # `apiKey: abc123`: after a colon unquoted, only what looks like a key (a digit in it, or long): the pool's
    # own `stripeSecret: Extra inputs are not permitted` names a field, it does not show one
    re.compile(
        rf"(?i)(\b{SECRET_NAME}\s*:\s*)((?=[^\s\"',;&}}\])]*\d)[^\s\"',;&}}\])]+|[^\s\"',;&}}\])]{{16,}})"
    ),
]

SECRET_ENV_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")
MIN_SECRET_LEN = 6
"""Shorter values (`1`, `true`) would mask innocent text everywhere; they are not keys anyway."""


def known_secrets(env: Mapping[str, str] = os.environ) -> list[str]:
    """The values of this process's environment variables whose names say they hold a secret."""
    return [
        value
        for name, value in env.items()
        if any(word in name.upper() for word in SECRET_ENV_WORDS) and len(value) >= MIN_SECRET_LEN
    ]


class Scrubber:
    """`scrub(text)`: the text with every credential-looking part and every known secret value masked."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = ScrubSecrets(known)

    def scrub(self, text: str) -> str:
        text = self.known.scrub(text)
        for named in _NAMED:
            text = named.sub(lambda m: m.group(1) + MASK, text)
        for pattern in _PATTERNS:
            text = pattern.sub(MASK, text)
        return text
