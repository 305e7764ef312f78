"""The service doubles (devstack/identity_double/, devstack/stripe_double.py) as real HTTP servers of ours,
with their test hooks: `/__faults`, `/__stats`, `/__reset` (and identity's `/__ratelimit`, `/__latency`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from devstack import engines
from tests.support.paths import BIN, ROOT
from tests.support.processes import SERVICE_KEY
from tests.support.waits import poll


class ServiceDouble:
    """A double as a real HTTP server (a subprocess of ours), ready when `ready_path` answers 200."""

    def __init__(self, module: str, args: list[str], log: Path, ready_path: str) -> None:
        self.port = engines.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.module, self.args, self.log, self.ready_path = module, args, log, ready_path
        self.start()

    def start(self) -> None:
        """Start the double (again, after `stop`: same port, log appended)."""
        log, module = self.log, self.module
        self.out = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "python"), "-m", module, "--port", str(self.port), *self.args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

        def ready() -> bool:
            assert self.proc.poll() is None, f"{module} exited at start:\n{log.read_text()}"
            try:
                return httpx.get(self.url + self.ready_path, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            poll(ready, timeout=20, what=f"{module} answering {self.ready_path}")
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"{error}\n{log.read_text()}") from None

    def hook(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return httpx.request(method, self.url + path, json=body, timeout=5).json()

    def stats(self) -> dict[str, int]:
        """Counters since the last reset: `METHOD /route` per request, `fault <status>` per injected answer, ..."""
        return self.hook("GET", "/__stats")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


class IdentityDouble(ServiceDouble):
    """The identity double (devstack/identity_double/) over the identity database."""

    def __init__(self, admin_url: str, log: Path, token_ttl: float = 300) -> None:
        super().__init__(
            "devstack.identity_double",
            ["--database-url", admin_url, "--service-key", SERVICE_KEY, "--token-ttl", str(token_ttl)],
            log,
            "/healthz",
        )

    def fault(self, status: int | str, count: int = 1, path: str = "", retry_after: float = 1) -> None:
        self.hook(
            "POST", "/__faults", {"status": status, "count": count, "path": path, "retryAfter": retry_after}
        )


class StripeDouble(ServiceDouble):
    """The Stripe double (localstripe + fault hooks, devstack/stripe_double.py)."""

    SECRET_KEY = "sk_test_billing_secret_4242"
    WEBHOOK_SECRET = "whsec_test_webhook_secret"

    def __init__(self, log: Path, state_file: Path | None = None) -> None:
        """With `state_file`, its customers and charges outlive `stop()` and `start()` (a real outage)."""
        args = ["--state-file", str(state_file)] if state_file else []
        super().__init__("devstack.stripe_double", args, log, "/__stats")

    def env(self) -> dict[str, str]:
        """What a pool process needs to talk to this double."""
        return {
            "STRIPE_SECRET_KEY": self.SECRET_KEY,
            "STRIPE_API_BASE": self.url,
            "STRIPE_WEBHOOK_SECRET": self.WEBHOOK_SECRET,
            "MA_STRIPE_NETWORK_RETRIES": "1",
        }

    def seed_intents(self, count: int, age_s: int, invoice_prefix: str) -> list[str]:
        """`count` paid PaymentIntents created `age_s` ago, for invoices `<invoice_prefix><n>`; ids, oldest first."""
        body = {"count": count, "ageSeconds": age_s, "invoicePrefix": invoice_prefix}
        return list(httpx.post(self.url + "/__payment_intents", json=body, timeout=60).json()["ids"])
