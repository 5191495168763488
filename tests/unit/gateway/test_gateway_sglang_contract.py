"""SGLang's wire contract, checked by SGLang's own request models (tests/sglang_oracle.py): every
body the gateway forwards to an SGLang engine validates against them; a request they refuse never
reaches the engine and gets an OpenAI-shaped 400; an invalid value in a field the OpenAI API gives
an enum or a shape gets a 400 whose ``param`` names that field.

Corpora: tests/data/conformance_requests.yaml (valid requests), tests/data/bad_inputs.yaml, and
mutations of every conformance request (each field in turn replaced by values of other types).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gateway_fakes import MODEL, bad_input_cases

pytestmark = pytest.mark.unit

CHAT = "/v1/chat/completions"
DATA = Path(__file__).resolve().parents[2] / "data"
CONFORMANCE = yaml.safe_load((DATA / "conformance_requests.yaml").read_text(encoding="utf-8"))["cases"]
# Values substituted for each field in turn: every JSON type, and strings no enum holds.
PALETTE: list[Any] = [None, -1, 1.5, "bogus", True, [], {}, [1], {"bogus": 1}]


def path_of(case: dict[str, Any]) -> str:
    return str(case.get("path", CHAT))


def field_paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 5) -> Iterator[tuple[Any, ...]]:
    """Every key / index path inside a JSON value (the top-level ``model`` excluded: 404 territory)."""
    if depth == 0:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for k, v in items:
        if prefix == () and k == "model":
            continue
        yield (*prefix, k)
        yield from field_paths(v, (*prefix, k), depth - 1)


def replaced(body: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target: Any = out
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = new
    return out


def mutations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for case in CONFORMANCE:
        for path in field_paths(case["json"]):
            for new in PALETTE:
                yield (
                    f"{case['id']}:{'.'.join(map(str, path))}={json.dumps(new)}",
                    path_of(case),
                    replaced(case["json"], path, new),
                )


@pytest.mark.parametrize("case", CONFORMANCE, ids=[c["id"] for c in CONFORMANCE])
async def test_forwarded_body_validates_against_sglangs_request_model(make_rig, sglang, case):
    rig = await make_rig()
    r = await rig.client.post(path_of(case), json=case["json"])
    assert r.status_code == 200, r.text
    forwarded = rig.engines["engine-a"].requests[-1]
    assert sglang.request_error(path_of(case), forwarded) is None
    assert forwarded.get("some_future_field", {"kept": True}) == {"kept": True}  # unknown fields pass through


async def test_no_request_sglang_refuses_reaches_the_engine(make_rig, sglang):
    """Over the bad-input corpus and every mutation of the conformance corpus: what the gateway
    forwards, SGLang accepts; what it does not forward gets an OpenAI-shaped 4xx."""
    rig = await make_rig()
    engine = rig.engines["engine-a"]
    bad = [(c["id"], path_of(c), c["json"]) for c in bad_input_cases() if "json" in c and "method" not in c]
    cases = [*bad, *mutations()]
    problems: list[str] = []
    refused_by_sglang = forwarded_n = 0
    for ident, path, body in cases:
        before = len(engine.requests)
        r = await rig.client.post(path, json=body)
        sglang_says = sglang.request_error(path, body)
        refused_by_sglang += sglang_says is not None
        if len(engine.requests) > before:
            forwarded_n += 1
            verdict = sglang.request_error(path, engine.requests[-1])
            if verdict is not None:
                problems.append(
                    f"{ident}: forwarded ({r.status_code}) but SGLang refuses it: {verdict.splitlines()[:3]}"
                )
        elif not (400 <= r.status_code < 500 and r.json()["error"]["message"]):
            problems.append(f"{ident}: not forwarded, yet answered {r.status_code} {r.text[:200]}")
        elif sglang_says is not None and r.status_code not in (400, 404):
            problems.append(f"{ident}: SGLang refuses it; the gateway answered {r.status_code}, not 400")
    assert problems == [], f"{len(problems)} of {len(cases)}:\n" + "\n".join(problems[:40])
    # The corpus is big enough to mean something, on both sides of the line.
    assert len(cases) > 1500
    assert refused_by_sglang > 300
    assert forwarded_n > 100


ENUMS = yaml.safe_load((DATA / "enum_violations.yaml").read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", ENUMS, ids=[c["id"] for c in ENUMS])
async def test_invalid_enum_or_shape_gets_400_naming_the_field(make_rig, sglang, case):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **case["patch"]}
    rig = await make_rig()
    r = await rig.client.post(CHAT, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == case["param"], err
    assert err["type"] == "invalid_request_error"
    assert err["code"]
    assert rig.engines["engine-a"].requests == []
    assert (sglang.request_error(CHAT, body) is not None) == case["sglang_refuses"]
