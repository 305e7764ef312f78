"""Where things are: the repository, the virtualenv's scripts, the Node BullMQ project the interop tests use."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE_DIR = ROOT / "tests" / "node"
