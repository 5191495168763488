"""The tenants file: key digests → tenant (weight, priority, limits); plain key lists still work;
the file is re-read when it changes — including a Kubernetes Secret rotation, where the kubelet
swaps a symlink — so a revoked key is refused without a restart; keys never reach the log."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import httpx
import pytest
from gateway_fakes import MODEL, EngineTransport, FakeEngine, endpoint

from serving.config import load_settings
from serving.gateway import create_app
from serving.gateway.auth import KeyStore, Priority, parse_tenants
from serving.gateway.errors import ApiError
from serving.registry import StaticEndpoints

pytestmark = pytest.mark.unit

OLD, NEW, BATCH = "sk-old-0123456789abcdef", "sk-new-0123456789abcdef", "sk-batch-0123456789abcdef"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenants_yaml(interactive_keys: list[str], batch_rpm: int = 100) -> str:
    return f"""tenants:
  - name: acme
    weight: 4
    priority: interactive
    keys: [{", ".join("sha256:" + sha(k) for k in interactive_keys)}]
  - name: nightly
    weight: 1
    priority: batch
    requests_per_min: {batch_rpm}
    keys: ["{sha(BATCH)}"]
"""


class Secret:
    """A directory laid out as the kubelet mounts a Secret: ``tenants.yaml → ..data/tenants.yaml``,
    ``..data → ..<version>``; ``rotate`` swaps ``..data`` atomically, as the kubelet does."""

    def __init__(self, root: Path, text: str) -> None:
        self.root, self.version = root, 0
        self._write(text)
        (root / "tenants.yaml").symlink_to("..data/tenants.yaml")

    def _write(self, text: str) -> None:
        self.version += 1
        d = self.root / f"..v{self.version}"
        d.mkdir()
        (d / "tenants.yaml").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(d.name)
        os.replace(tmp, self.root / "..data")

    rotate = _write

    @property
    def path(self) -> Path:
        return self.root / "tenants.yaml"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def store(path: Path, clock: Clock) -> KeyStore:
    cfg = load_settings(overrides={"gateway": {"api_keys": {"file": str(path)}}}, env={}).gateway.api_keys
    return KeyStore(cfg, clock=clock)


def test_tenants_file_maps_key_digests_to_tenants():
    got = parse_tenants(tenants_yaml([OLD]), "t.yaml")
    acme, nightly = got[sha(OLD)], got[sha(BATCH)]
    assert (acme.name, acme.weight, acme.priority) == ("acme", 4.0, Priority.INTERACTIVE)
    assert (nightly.name, nightly.priority, nightly.requests_per_min) == ("nightly", Priority.BATCH, 100)


def test_plain_key_lists_stay_accepted(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# one per line\n{OLD}\n\n{NEW}\n")
    ks = store(f, Clock())
    assert ks.authenticate(f"Bearer {OLD}") == sha(OLD)
    assert ks.tenant(sha(NEW)).weight == 1.0


@pytest.mark.parametrize("bad", ["tenants:\n  - weight: 2\n", "tenants:\n  - name: a\n    keys: [sk-plain-key]\n",
                                 "tenants:\n  - name: a\n    priority: urgent\n"])  # fmt: skip
def test_a_malformed_tenants_file_is_refused_naming_the_problem(bad):
    with pytest.raises(ValueError, match=r"tenants\[0\]"):
        parse_tenants(bad, "t.yaml")


def test_a_rotated_secret_revokes_the_old_key_at_the_next_check(tmp_path, caplog):
    secret = Secret(tmp_path, tenants_yaml([OLD]))
    clock = Clock()
    ks = store(secret.path, clock)
    assert ks.authenticate(f"Bearer {OLD}") == sha(OLD)
    caplog.set_level(logging.DEBUG)
    secret.rotate(tenants_yaml([NEW]))
    clock.t += ks._cfg.reload_s  # the next check is due
    with pytest.raises(ApiError) as e:
        ks.authenticate(f"Bearer {OLD}")
    assert e.value.status == 401
    assert ks.tenant(ks.authenticate(f"Bearer {NEW}")).name == "acme"
    assert "reloaded" in caplog.text
    assert all(k not in caplog.text and sha(k) not in caplog.text for k in (OLD, NEW, BATCH))


def test_a_broken_rewrite_keeps_the_previous_keys(tmp_path):
    secret = Secret(tmp_path, tenants_yaml([OLD]))
    clock = Clock()
    ks = store(secret.path, clock)
    secret.rotate("tenants:\n  - name: x\n    keys: [not-a-digest]\n")
    clock.t += ks._cfg.reload_s
    assert ks.authenticate(f"Bearer {OLD}") == sha(OLD)


def test_the_check_interval_bounds_revocation_within_a_minute():
    assert load_settings(env={}).gateway.api_keys.reload_s <= 60


async def test_revocation_and_tenant_limits_through_the_gateway(tmp_path):
    secret = Secret(tmp_path, tenants_yaml([OLD], batch_rpm=1))
    overrides = {"gateway": {"api_keys": {"file": str(secret.path), "reload_s": 1e-6}}}
    app = create_app(load_settings(overrides=overrides, env={}), StaticEndpoints([endpoint("engine-a")]),
                     transport=EngineTransport({"engine-a": FakeEngine("engine-a")}))  # fmt: skip
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:

        async def post(key: str) -> int:
            r = await c.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {key}"})
            return r.status_code

        assert await post(OLD) == 200
        assert [await post(BATCH), await post(BATCH)] == [200, 429]  # the batch tenant's own 1/min
        assert await post(OLD) == 200  # acme has no such limit
        secret.rotate(tenants_yaml([NEW], batch_rpm=1))
        assert await post(OLD) == 401
        assert await post(NEW) == 200
