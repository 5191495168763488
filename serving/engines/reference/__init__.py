"""Reference data read at run time, generated from the engines' released wheels.

``sglang-serve-0.5.23.flags.json`` is every option of SGLang 0.5.23's ``sglang serve`` parser
(names, converter, action, choices, default), written by ``scripts/gen_option_tables.py``
(``make reference``) from the wheel named in its ``wheel`` key (file name, sha256, the pip command).
The simulator declares its SGLang options from it, so it rejects what SGLang would reject.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SGLANG_VERSION = "0.5.23"
SGLANG_FLAGS = HERE / f"sglang-serve-{SGLANG_VERSION}.flags.json"

__all__ = ["SGLANG_FLAGS", "SGLANG_VERSION"]
