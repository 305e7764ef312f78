"""ma-top entry point. The dashboard itself is tracked by its own issue; until it lands this says so."""

from __future__ import annotations

import sys


def main() -> int:
    print("ma-top: the dashboard is not built yet; use `supervisorctl -c supervisord.conf status` and "
          "`ma-worker enqueue` meanwhile", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main())
