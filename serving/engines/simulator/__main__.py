"""``python -m serving.engines.simulator <SGLang argv> [--sim-* knobs]``."""

from __future__ import annotations

import sys

from serving.engines.simulator.args import parse_args
from serving.engines.simulator.server import serve


def main(argv: list[str] | None = None) -> None:
    serve(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
