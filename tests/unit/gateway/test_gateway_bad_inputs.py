"""Every case of the bad-input corpus (tests/data/bad_inputs.yaml) gets its 4xx in the OpenAI
error shape; none reaches the engine; the gateway answers normally afterwards."""

from __future__ import annotations

import pytest
from gateway_fakes import MODEL, bad_input_cases, bad_input_request

pytestmark = pytest.mark.unit

CASES = bad_input_cases()


def test_corpus_is_big_enough_and_ids_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_bad_input_gets_openai_shaped_4xx(make_rig, case):
    rig = await make_rig()
    method, path, body = bad_input_request(case)
    r = await rig.client.request(method, path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == case["status"], r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str)
    assert err["message"]
    assert {"type", "param", "code"} <= set(err)
    if "param" in case:
        assert err["param"] == case["param"]
    assert r.headers.get("x-request-id")
    assert rig.engines["engine-a"].requests == []  # refused before any engine saw it
    ok = await rig.client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert ok.status_code == 200
