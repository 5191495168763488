"""Money: $/GPU-hour tables and $ per million tokens.

GPU time is shared between input (prefill) and output (decode) tokens by a weight: an input token
costs ``input_weight`` of an output token (default 0.25, an assumption you can override). Then

    cost = $/GPU-h × GPU-hours = in_tokens × p_in + out_tokens × p_out,  p_in = input_weight × p_out

so the two prices add back up to what the run cost.

A thinking model spends most of its output on reasoning the user never reads, so the output side
of the bill is also given per *answer* token: $/M answer = (out_tokens × p_out) ÷ answer_tokens,
the same dollars spread over the tokens that reach the user (≥ $/M output; equal without thinking).

**Plans** (:func:`split_by_gpu_time`) need no assumed weight: the capacity model knows the share
of a replica's GPU time that prefills take at the SLO point (ρ = requests/s × prefill seconds per
prompt, per pipeline stage). That share of $/GPU-h is charged to input tokens, the rest (decode
steps) to output tokens; ``usd_per_million_output_all`` charges everything to output tokens (input
free), the figure to compare with a price list that only quotes output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PRICES = Path(__file__).parent / "data" / "gpu_prices.yaml"
HOURS_PER_MONTH = 730.0  # 365 × 24 / 12
DEFAULT_INPUT_WEIGHT = 0.25


@dataclass(frozen=True)
class PriceTable:
    usd_per_gpu_hour: dict[str, float]
    as_of: str
    basis: str

    def price(self, gpu_type: str) -> float:
        try:
            return self.usd_per_gpu_hour[gpu_type]
        except KeyError:
            raise ValueError(
                f"no $/GPU-hour for GPU type {gpu_type!r}; known: {', '.join(self.usd_per_gpu_hour)} "
                "(add one with --price TYPE=USD)"
            ) from None

    def with_overrides(self, items: list[str] | None) -> PriceTable:
        """``["h100=2.5", …]`` override or add prices."""
        prices = dict(self.usd_per_gpu_hour)
        for item in items or ():
            gpu, sep, raw = item.partition("=")
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not sep or not gpu or value < 0:
                raise ValueError(f"--price {item!r}: expected TYPE=USD_PER_GPU_HOUR, e.g. h100=2.5")
            prices[gpu.strip().lower()] = value
        basis = self.basis if not items else f"{self.basis}; overridden: {', '.join(items)}"
        return PriceTable(prices, self.as_of, basis)


def load_prices(path: Path | None = None) -> PriceTable:
    p = path or DEFAULT_PRICES
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"price table {p}: cannot read ({exc})") from None
    table = data.get("usd_per_gpu_hour") if isinstance(data, dict) else None
    if not isinstance(table, dict) or not all(isinstance(v, int | float) and v >= 0 for v in table.values()):
        raise ValueError(f"price table {p}: usd_per_gpu_hour must map GPU types to non-negative numbers")
    return PriceTable(
        {str(k): float(v) for k, v in table.items()}, str(data.get("as_of", "")), str(data.get("basis", ""))
    )


@dataclass(frozen=True)
class Cost:
    gpu_hours: float
    usd_per_gpu_hour: float
    total_usd: float
    usd_per_million_output: float | None
    usd_per_million_input: float | None
    input_weight: float
    usd_per_million_answer: float | None = None  # output dollars ÷ answer tokens (reasoning excluded)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def token_cost(
    gpu_hours: float,
    usd_per_gpu_hour: float,
    input_tokens: int,
    output_tokens: int,
    input_weight: float = DEFAULT_INPUT_WEIGHT,
    answer_tokens: int | None = None,
) -> Cost:
    """``answer_tokens``: the output tokens that are not reasoning (None: not known)."""
    if gpu_hours < 0 or usd_per_gpu_hour < 0 or input_weight < 0:
        raise ValueError("GPU-hours, price and input weight must be non-negative")
    if answer_tokens is not None and not 0 <= answer_tokens <= output_tokens:
        raise ValueError(f"answer tokens must be within [0, output tokens], got {answer_tokens} of {output_tokens}")
    total = gpu_hours * usd_per_gpu_hour
    units = output_tokens + input_weight * input_tokens  # output-token equivalents
    p_out = total / units if units > 0 else None
    return Cost(
        gpu_hours=gpu_hours,
        usd_per_gpu_hour=usd_per_gpu_hour,
        total_usd=total,
        usd_per_million_output=p_out * 1e6 if p_out is not None else None,
        usd_per_million_input=p_out * input_weight * 1e6 if p_out is not None else None,
        input_weight=input_weight,
        usd_per_million_answer=(
            p_out * output_tokens / answer_tokens * 1e6 if p_out is not None and answer_tokens else None
        ),
    )


@dataclass(frozen=True)
class TokenPrices:
    """$ per million tokens of one replica running at a given load."""

    usd_per_million_input: float
    usd_per_million_output: float
    usd_per_million_output_all: float  # every GPU-hour charged to output tokens
    prefill_share: float  # the share of GPU time charged to input tokens

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def split_by_gpu_time(
    usd_per_hour: float, rps: float, prompt_tokens: float, output_tokens: float, prefill_share: float
) -> TokenPrices:
    """A replica costing ``usd_per_hour`` serves ``rps`` requests/s of ``prompt_tokens`` in and
    ``output_tokens`` out, spending ``prefill_share`` of its GPU time on prefills."""
    if usd_per_hour < 0 or rps <= 0 or prompt_tokens <= 0 or output_tokens <= 0 or not 0 <= prefill_share <= 1:
        raise ValueError(
            "need $/h ≥ 0, requests/s > 0, prompt and output tokens > 0 and a prefill share within [0, 1]; got "
            f"{usd_per_hour}, {rps}, {prompt_tokens}, {output_tokens}, {prefill_share}"
        )
    usd_s = usd_per_hour / 3600.0
    ins, outs = rps * prompt_tokens, rps * output_tokens  # tokens per second
    return TokenPrices(
        usd_per_million_input=usd_s * prefill_share / ins * 1e6,
        usd_per_million_output=usd_s * (1 - prefill_share) / outs * 1e6,
        usd_per_million_output_all=usd_s / outs * 1e6,
        prefill_share=prefill_share,
    )


def monthly_usd(gpus: int, usd_per_gpu_hour: float) -> float:
    return gpus * usd_per_gpu_hour * HOURS_PER_MONTH
