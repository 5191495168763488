"""The gateway fakes of tests/unit/gateway (imported by their unique module name)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from gateway_fakes import make_rig  # found on the path set above

__all__ = ["make_rig"]
