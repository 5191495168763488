"""The llama-server build's fallback ladder: best instruction sets first, AMX dropped before
vector extensions, the portable and baseline builds last; LLAMA_CONFIGS replaces it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


SAPPHIRE = ["__AVX2__", "__AVX512F__", "__AVX512CD__", "__AVX512VL__", "__AVX512DQ__", "__AVX512BW__",
            "__AVX512VNNI__", "__AVX512BF16__", "__AVX512VBMI__", "__AVXVNNI__", "__AVX__", "__FMA__", "__F16C__",
            "__BMI2__", "__SSE4_2__", "__AMX_TILE__", "__AMX_INT8__", "__AMX_BF16__"]  # fmt: skip


def test_an_amx_cpu_falls_back_to_its_own_instruction_sets_without_amx_before_going_portable(build, monkeypatch):
    monkeypatch.delenv("LLAMA_CONFIGS", raising=False)
    configs = build.ladder(build.Machine("gcc 12", SAPPHIRE))
    assert [c.name for c in configs] == ["native", "native-no-amx", "portable", "baseline"]
    no_amx = configs[1].options
    assert "-DGGML_NATIVE=OFF" in no_amx
    for on in ("GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX_VNNI", "GGML_AVX2"):
        assert f"-D{on}=ON" in no_amx
    for off in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert f"-D{off}=OFF" in no_amx
        assert f"-D{off}=ON" not in no_amx
    assert "-DGGML_AVX512=ON" not in configs[2].options
    assert "-DGGML_AVX2=ON" in configs[2].options


def test_a_cpu_without_amx_skips_the_no_amx_rebuild(build, monkeypatch):
    monkeypatch.delenv("LLAMA_CONFIGS", raising=False)
    epyc = [m for m in SAPPHIRE if "AMX" not in m]
    assert [c.name for c in build.ladder(build.Machine("gcc 12", epyc))] == ["native", "portable", "baseline"]


def test_llama_configs_names_the_ladder_and_rejects_unknown_names(build, monkeypatch):
    machine = build.Machine("gcc 12", SAPPHIRE)
    monkeypatch.setenv("LLAMA_CONFIGS", "portable")
    assert [c.name for c in build.ladder(machine)] == ["portable"]
    monkeypatch.setenv("LLAMA_CONFIGS", "portable,turbo")
    with pytest.raises(SystemExit, match="turbo"):
        build.ladder(machine)


def test_the_stamp_fingerprint_follows_cpu_features_and_compiler_not_the_model_name(build):
    a = build.Machine("gcc 12", SAPPHIRE)
    assert a.fingerprint == build.Machine("gcc 12", list(SAPPHIRE)).fingerprint
    assert a.fingerprint != build.Machine("gcc 12", SAPPHIRE[:-3]).fingerprint
    assert a.fingerprint != build.Machine("gcc 13", SAPPHIRE).fingerprint
