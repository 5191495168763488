"""The build's smoke generation accepts the real llama-server and rejects a binary that starts,
answers /health, then dies with SIGILL at its first generation (what ggml's AMX kernels did)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.conftest import LLAMA_SERVER as BINARY

pytestmark = pytest.mark.integration


@pytest.mark.llama_server
def test_the_built_llama_server_passes_its_smoke_generation(build, tmp_path):
    assert BINARY.exists(), "run `make llama-server`"
    result = build.smoke_generate(BINARY, build.shipped_gguf(), log=tmp_path / "smoke.log", tokens=4)
    assert result["tokens"] == 4


def test_a_server_that_dies_with_sigill_at_the_first_generation_is_rejected(build, tmp_path):
    fake = tmp_path / "llama-server"
    fake.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import os, signal, sys
            from http.server import BaseHTTPRequestHandler, HTTPServer
            port = int(sys.argv[sys.argv.index("--port") + 1])
            class H(BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
                def do_POST(self):
                    print("ggml_backend_amx_mul_mat", flush=True)
                    os.kill(os.getpid(), signal.SIGILL)
            print("server is listening", flush=True)
            HTTPServer(("127.0.0.1", port), H).serve_forever()
            """
        )
    )
    fake.chmod(0o755)
    with pytest.raises(build.SmokeFailure) as info:
        build.smoke_generate(fake, build.shipped_gguf(), log=tmp_path / "smoke.log", timeout_s=30)
    assert "failed its first generation" in info.value.summary
    assert "SIGILL (illegal instruction)" in info.value.summary
    assert "ggml_backend_amx_mul_mat" in str(info.value)  # the server's last lines come along
