"""Our gateway on plain uvicorn over fixed engine URLs: ``python -m bench.gateway_server '<json>'``."""

from __future__ import annotations

import json
import sys

import uvicorn

from serving.config import load_settings
from serving.registry import Endpoint, StaticEndpoints


def main() -> None:
    spec = json.loads(sys.argv[1])
    from serving.gateway import create_app

    s = load_settings(overrides=spec["overrides"], env={})
    eps = [
        Endpoint(replica_id=f"engine-{i}", url=u, model=s.model.served_name or "", engine=s.engine.kind.value)
        for i, u in enumerate(spec["engines"])
    ]
    app = create_app(s, StaticEndpoints(eps))
    uvicorn.run(app, host="127.0.0.1", port=spec["port"], log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
