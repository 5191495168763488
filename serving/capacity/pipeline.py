"""Pipeline-parallel timing of one instance: ``pp`` stages of ``tp`` GPUs, microbatches in a ring.

:class:`serving.capacity.timing.TimingModel` prices one forward pass of *all* layers on one TP
group. With ``pp > 1`` the layers are split over stages that run one after another, so a token's
latency does not shrink with ``pp`` — only the memory per GPU does. This module builds the
pipeline from the TP-only model (``pp = 1``); with ``pp = 1`` it returns exactly that model's times.
(``TimingModel`` itself, given ``pp > 1``, divides a step's bytes by tp × pp as if the stages ran at
once: an optimistic step, which the planner does not use.)

Facts (SGLang 0.5.23):

- the scheduler keeps ``pp_size`` (+ ``--pp-async-batch-depth``, default 0) microbatches in
  flight, each of at most ``max_running_requests // pp_size`` requests (the default
  ``--pp-max-micro-batch-size``; ``srt/managers/scheduler_pp_mixin.py``, ``scheduler.py``);
- a stage sends its hidden states and residual to the next stage; with TP each rank sends 1/TP of
  them and the next stage all-gathers them (``send_tensor_dict`` with ``all_gather_group``,
  ``srt/distributed/parallel_state.py``); the last stage sends the sampled tokens back to the first;
- speculative decoding under PP is refused by the settings (``pipeline_excludes_mtp``), so a
  pipeline here generates one token per request per round.

Model (every term of the TP model — weight, KV and state bytes, FLOPs, kernel launches,
all-reduces — is per layer, and a stage holds ``layers / pp`` of them):

- stage pass of a microbatch of ``m`` requests = TP model's ``forward_s(m, context)`` ÷ ``pp``;
- a hop between stages = latency + bytes ÷ link bandwidth, bytes = 2 tensors × hidden × 2 bytes per
  token ÷ TP, plus the receiving stage's all-gather over NVLink;
- decode round (every running request advances one token) with ``B`` running:
  ``k = min(B, pp)`` microbatches of ``⌈B / k⌉``; round = ``pp`` stage passes + every hop of the ring.
  With ``B < pp`` stages idle for part of the round: the **bubble**, ``1 − k · pass ÷ round``;
- prefill of one prompt: ``pp`` stage passes of the TP model's prefill ÷ ``pp`` plus ``pp − 1``
  activation hops (latency ≥ the TP-only prefill); each stage is busy for prefill ÷ ``pp`` of it.
  Prompts are taken as one chunk: pipelining the chunks of a long prompt through the stages is
  not modelled (TTFT of long prompts under PP is over-estimated, never under-estimated);
- links: a hop inside a node runs over NVLink (the GPU profile's bandwidth, the calibration's
  collective latency); across nodes over one 400 Gb/s NIC per GPU (ConnectX-7 as in DGX
  H100/H200/B200: 50 GB/s) with :data:`INTER_NODE_LATENCY_S` — an assumption, not measured here.
  Stages are placed in order, ``pp / nodes`` per node, so ``nodes − 1`` activation hops and the
  token hop back to the first stage cross nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.capacity.timing import DEFAULT_CALIBRATION, Calibration, Deployment, TimingModel

INTER_NODE_BYTES_S = 50e9  # one 400 Gb/s ConnectX-7 NIC per GPU
INTER_NODE_LATENCY_S = 20e-6  # assumption: a small NCCL send/recv over InfiniBand, launch included
ACTIVATION_TENSORS = 2  # hidden states + residual
ACTIVATION_BYTES = 2  # bf16
TOKEN_ID_BYTES = 8  # int64 ids sent back to the first stage


@dataclass(frozen=True)
class Links:
    inter_node_bytes_s: float = INTER_NODE_BYTES_S
    inter_node_latency_s: float = INTER_NODE_LATENCY_S


DEFAULT_LINKS = Links()


class PipelineTiming:
    """Decode round and prefill of one instance of ``d.tp × d.pp`` GPUs over ``nodes`` nodes."""

    def __init__(
        self, d: Deployment, nodes: int = 1, cal: Calibration = DEFAULT_CALIBRATION, links: Links = DEFAULT_LINKS
    ) -> None:
        if d.pp < 1 or nodes < 1 or d.pp % nodes:
            raise ValueError(
                f"pp={d.pp} over nodes={nodes}: whole stages per node are modelled, not a TP group across nodes"
            )
        self.pp, self.nodes, self.cal, self.links = d.pp, nodes, cal, links
        self.stage = TimingModel(d.with_(pp=1), cal)  # one TP group holding every layer
        if self.pp > 1 and self.stage.spec:
            raise ValueError("speculative decoding under pipeline parallel is not modelled (the settings refuse it)")

    @property
    def tokens_per_step(self) -> float:
        return self.stage.tokens_per_step

    def microbatches(self, batch: int) -> int:
        return max(1, min(batch, self.pp))

    def _link(self, cross_node: bool) -> tuple[float, float]:
        if cross_node:
            return self.links.inter_node_latency_s, self.links.inter_node_bytes_s
        return self.cal.allreduce_latency_s, self.stage.gpu.nvlink_bandwidth_bytes_s

    def hop_s(self, tokens: int, cross_node: bool) -> float:
        """Hidden states + residual of ``tokens`` from one stage to the next (send, then all-gather)."""
        tp = self.stage.d.tp
        full = tokens * ACTIVATION_TENSORS * self.stage.d.preset.hidden_size * ACTIVATION_BYTES
        latency, bw = self._link(cross_node)
        t = latency + full / tp / bw
        if tp > 1:
            t += self.cal.allreduce_latency_s + full * (tp - 1) / tp / self.stage.gpu.nvlink_bandwidth_bytes_s
        return t

    def _forward_hops_s(self, tokens: int) -> float:
        crossing = self.nodes - 1  # stage boundaries between nodes (stages in order, pp / nodes per node)
        return crossing * self.hop_s(tokens, True) + (self.pp - 1 - crossing) * self.hop_s(tokens, False)

    def _token_hop_s(self, batch: int) -> float:
        latency, bw = self._link(self.nodes > 1)
        return latency + batch * TOKEN_ID_BYTES / bw

    def stage_pass_s(self, batch: int, total_context: int) -> float:
        """One stage's pass over a microbatch of ``batch`` requests."""
        return self.stage.forward_s(batch, total_context) / self.pp

    def decode_step_s(self, batch: int, total_context: int) -> float:
        """One round: every running request advances once (with ``pp = 1``: the TP model's step)."""
        if self.pp == 1 or batch <= 0:
            return self.stage.decode_step_s(batch, total_context)
        k = self.microbatches(batch)
        m = -(-batch // k)
        passes = self.pp * self.stage_pass_s(m, int(total_context * m / batch))
        return passes + self._forward_hops_s(m) + self._token_hop_s(m)

    def bubble(self, batch: int, total_context: int) -> float:
        """Share of a decode round each stage sits idle (waiting for microbatches or transfers)."""
        if self.pp == 1 or batch <= 0:
            return 0.0
        k = self.microbatches(batch)
        m = -(-batch // k)
        busy = k * self.stage_pass_s(m, int(total_context * m / batch))
        return max(0.0, 1.0 - busy / self.decode_step_s(batch, total_context))

    def prefill_s(self, new_tokens: int) -> float:
        """Latency of one prompt's prefill through every stage."""
        if self.pp == 1 or new_tokens <= 0:
            return self.stage.prefill_s(new_tokens)
        return self.stage.prefill_s(new_tokens) + self._forward_hops_s(new_tokens)

    def prefill_busy_s(self, new_tokens: int) -> float:
        """GPU time one prompt's prefill takes on each stage (the share that slows decoding)."""
        return self.stage.prefill_s(new_tokens) / self.pp
