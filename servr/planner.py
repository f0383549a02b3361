"""The memory planner: what fits in the GPU budget, decided before any weights are loaded.

Arithmetic (bytes; see docts/models.md for a worked example):

    weights on GPU   llama.cpp: every block + output norm/projection (a tied output is a second
                     copy of the embedding); the input embedding stays in host memory.
                     Transformers: everything, in bf16 or, when that does not fit, 4-bit
                     (bitsandbytes NF4 for the linear layers; embedding and lm_head stay bf16).
    KV per token     layers × KV heads × head dim × 2 (K and V) × element size
                     (f16: 2 bytes; q8_0: 34 bytes per 32 values; Transformers: bf16).
    reserve          CUDA context + compute buffers: llama.cpp's are sized by the micro-batch
                     (512 tokens × (vocab + 2 × FFN + 4 × hidden) × 4 bytes) and assume flash
                     attention, without which the attention scores of a full micro-batch take
                     n_ctx × 512 × heads × 4 bytes more; Transformers' activations grow with the
                     prompt it prefills at once: tokens × (2 × FFN + 4 × hidden) × 2 bytes.
    n_ctx            the largest multiple of 256 with weights + KV × n_ctx + reserve ≤ budget,
                     capped by the model's trained context and AGENT_CTX.

A plan fits when every layer is on the GPU with at least MIN_CTX tokens (or the asked AGENT_CTX).
Otherwise it is refused with a suggestion: a smaller quantization or model from the profiles that
fits, or how many layers would fit if the person accepts running the rest on the CPU
(AGENT_N_GPU_LAYERS). Without a GPU the arithmetic is the same (for the budget asked) and the plan
says the server runs on the CPU.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from model.inspect import WeightsLayout, layout_from_profile
from model.profiles import PROFILES, Profile, smaller_alternatives

GiB = 1 << 30
MiB = 1 << 20
MIN_CTX = 4096  # below this an agent's system prompt and tools leave no room to work
CTX_STEP = 256
CUDA_CONTEXT_BYTES = 512 * MiB  # driver context, cuBLAS workspace: what nvidia-smi shows before any tensor
LLAMA_UBATCH = 512
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "bf16": 2.0}
BNB_4BIT_RATIO = 4.5 / 16  # NF4: 4 bits per weight + one fp32 absmax per 64 weights, over bf16


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_bytes: int
    free_bytes: int


def detect_gpu() -> GpuInfo | None:
    """The first NVIDIA GPU as ``nvidia-smi`` reports it (no torch import), or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        name, total, free = (x.strip() for x in out.splitlines()[0].split(","))
        return GpuInfo(name=name, total_bytes=int(float(total)) * MiB, free_bytes=int(float(free)) * MiB)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class MemoryPlan:
    fits: bool
    backend: str
    device: Literal["cuda", "cpu"]
    budget_bytes: int
    n_ctx: int
    n_layers: int
    n_gpu_layers: int  # transformer blocks on the GPU (0…n_layers)
    output_on_gpu: bool
    weights_bytes: int  # weights placed on the GPU by this plan
    weights_total_bytes: int  # the whole model as stored
    kv_cache_type: str
    kv_bytes_per_token: int
    kv_bytes: int
    reserve_bytes: int
    total_bytes: int
    load_in_4bit: bool
    trained_ctx: int
    source: str
    suggestion: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def llama_n_gpu_layers(self) -> int:
        """The value for llama.cpp's ``n_gpu_layers`` (-1: all, output included)."""
        if self.device == "cpu":
            return 0
        return -1 if self.output_on_gpu and self.n_gpu_layers == self.n_layers else self.n_gpu_layers

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["llama_n_gpu_layers"] = self.llama_n_gpu_layers
        return d

    def lines(self) -> list[str]:
        """The plan as a person reads it."""
        g = lambda b: f"{b / GiB:.2f} GiB"  # noqa: E731
        out = [
            f"memory plan ({self.backend}, budget {g(self.budget_bytes)}): "
            + ("fits" if self.fits else "DOES NOT FIT"),
            f"  weights      {g(self.weights_bytes)} on the GPU ({self.n_gpu_layers}/{self.n_layers} layers"
            + (", output" if self.output_on_gpu else "") + (", 4-bit" if self.load_in_4bit else "")
            + f"; {self.source})",
            f"  KV cache     {self.kv_bytes_per_token:,} bytes/token × {self.n_ctx:,} tokens = {g(self.kv_bytes)}"
            f" ({self.kv_cache_type}; trained context {self.trained_ctx:,})",
            f"  reserve      {g(self.reserve_bytes)} (CUDA context, compute buffers)",
            f"  total        {g(self.total_bytes)} of {g(self.budget_bytes)}",
        ]
        out += [f"  note: {n}" for n in self.notes]
        if self.suggestion:
            out.append(f"  suggestion: {self.suggestion}")
        return out


@dataclass(frozen=True)
class _Costs:
    gpu_weights_full: int  # all blocks + output
    head_gpu: int
    per_layer: tuple[int, ...]
    kv_per_token: int
    fixed_reserve: int
    per_token_reserve: int  # reserve that grows with n_ctx
    load_in_4bit: bool
    kv_type: str


def _bf16_layout(layout: WeightsLayout) -> WeightsLayout:
    """What Transformers holds after loading a GGUF file: the weights dequantized to bf16."""
    a = layout.arch
    per_layer = (a.hidden_size * a.n_heads * a.head_dim * 2 + a.hidden_size * a.n_kv_heads * a.head_dim * 2
                 + a.hidden_size * a.intermediate_size * 3) * 2
    embed = a.vocab_size * a.hidden_size * 2
    return WeightsLayout(format="hf", dtype="bfloat16", layer_bytes=(per_layer,) * a.n_layers, embed_bytes=embed,
                         head_bytes=0 if a.tied_embeddings else embed, arch=a,
                         source=layout.source + ", dequantized to bf16 by Transformers")


def _costs(layout: WeightsLayout, backend: str, kv_cache_type: str, flash_attn: bool,
           prefill_chunk: int | None, four_bit: bool) -> _Costs:
    a = layout.arch
    if backend == "llamacpp":
        kv_type = kv_cache_type
        head = layout.head_bytes + (layout.embed_bytes if a.tied_embeddings else 0)
        compute = LLAMA_UBATCH * (a.vocab_size + 2 * a.intermediate_size + 4 * a.hidden_size) * 4
        per_tok_reserve = 0 if flash_attn else LLAMA_UBATCH * a.n_heads * 4
        layers = layout.layer_bytes
    else:
        kv_type = "bf16"
        if layout.format == "gguf":
            layout = _bf16_layout(layout)
        head = layout.embed_bytes + layout.head_bytes  # the embedding lives on the GPU too
        layers = tuple(int(b * BNB_4BIT_RATIO) for b in layout.layer_bytes) if four_bit else layout.layer_bytes
        act = (2 * a.intermediate_size + 4 * a.hidden_size) * 2
        compute = a.vocab_size * 4 * 2 + (act * prefill_chunk if prefill_chunk else 0)
        per_tok_reserve = 0 if prefill_chunk else act
    kv = int(a.n_layers * a.n_kv_heads * a.head_dim * 2 * KV_ELEMENT_BYTES[kv_type])
    return _Costs(gpu_weights_full=sum(layers) + head, head_gpu=head, per_layer=layers, kv_per_token=kv,
                  fixed_reserve=CUDA_CONTEXT_BYTES + compute, per_token_reserve=per_tok_reserve,
                  load_in_4bit=four_bit, kv_type=kv_type)


def _largest_ctx(room: int, per_token: int) -> int:
    if room <= 0:
        return 0
    return room // per_token // CTX_STEP * CTX_STEP


def plan_memory(layout: WeightsLayout, *, backend: str = "llamacpp", vram_gb: float = 8.0,
                ctx: int | None = None, n_gpu_layers: int | None = None, kv_cache_type: str = "f16",
                gpu: GpuInfo | None = None, profile: Profile | None = None, flash_attn: bool = True,
                prefill_chunk: int | None = None, suggest: bool = True) -> MemoryPlan:
    """The plan for ``layout`` under ``vram_gb``; ``gpu`` None plans for the budget and runs on the CPU."""
    if backend not in ("llamacpp", "transformers"):
        raise ValueError(f"backend must be llamacpp or transformers, not {backend!r}")
    if kv_cache_type not in ("f16", "q8_0"):
        raise ValueError(f"kv cache type must be f16 or q8_0, not {kv_cache_type!r}")
    a = layout.arch
    notes: list[str] = []
    budget = int(vram_gb * GiB)
    if gpu is not None and gpu.free_bytes < budget:
        notes.append(f"{gpu.name} has {gpu.free_bytes / GiB:.2f} GiB free, less than AGENT_VRAM_GB={vram_gb:g}: "
                     "planning for what is free")
        budget = gpu.free_bytes
    cap = min(a.trained_ctx, ctx) if ctx else a.trained_ctx
    if ctx and ctx > a.trained_ctx:
        notes.append(f"AGENT_CTX={ctx:,} is beyond the trained context; capped at {a.trained_ctx:,}")
    need = min(cap, ctx or MIN_CTX)

    four_bit = False
    c = _costs(layout, backend, kv_cache_type, flash_attn, prefill_chunk, four_bit)
    per_token = c.kv_per_token + c.per_token_reserve
    fit_ctx = _largest_ctx(budget - c.gpu_weights_full - c.fixed_reserve, per_token)
    if backend == "transformers" and fit_ctx < need and layout.quantized is None:
        four_bit = True
        c = _costs(layout, backend, kv_cache_type, flash_attn, prefill_chunk, four_bit)
        fit_ctx = _largest_ctx(budget - c.gpu_weights_full - c.fixed_reserve, per_token)
        notes.append("bf16 weights do not fit: loading in 4-bit (bitsandbytes NF4, CUDA only)")

    forced = n_gpu_layers is not None and n_gpu_layers != -1 and n_gpu_layers < a.n_layers
    if forced and backend == "llamacpp":
        k = max(0, int(n_gpu_layers or 0))
        weights = sum(sorted(c.per_layer, reverse=True)[:k])
        kv_tok = c.kv_per_token * k // max(a.n_layers, 1)
        room = budget - weights - c.fixed_reserve
        k_ctx = _largest_ctx(room, kv_tok + c.per_token_reserve) if kv_tok else cap
        n_ctx = min(cap, k_ctx) if ctx is None else cap
        fits = k_ctx >= max(need, n_ctx)
        notes.append(f"AGENT_N_GPU_LAYERS={k}: {a.n_layers - k} layers run on the CPU (slower)")
        plan = _plan(c, layout, backend, budget, n_ctx, k, False, weights, kv_tok, fits, gpu, notes)
    else:
        n_ctx = min(cap, fit_ctx) if ctx is None else cap
        fits = fit_ctx >= need
        if not fits:
            n_ctx = need
        plan = _plan(c, layout, backend, budget, n_ctx, a.n_layers, True, c.gpu_weights_full, c.kv_per_token,
                     fits, gpu, notes)
    if not plan.fits and suggest:
        plan = _with_suggestion(plan, layout, c, backend=backend, vram_gb=vram_gb, ctx=ctx, need=need,
                                budget=budget, kv_cache_type=kv_cache_type, profile=profile, fit_ctx=fit_ctx,
                                forced=forced and backend == "llamacpp")
    return plan


def _plan(c: _Costs, layout: WeightsLayout, backend: str, budget: int, n_ctx: int, k: int, output: bool,
          weights: int, kv_tok: int, fits: bool, gpu: GpuInfo | None, notes: list[str]) -> MemoryPlan:
    reserve = c.fixed_reserve + c.per_token_reserve * n_ctx
    kv = kv_tok * n_ctx
    out_notes = list(notes)
    if gpu is None:
        out_notes.append("no CUDA GPU found: the server runs on the CPU (n_gpu_layers 0); "
                         "these figures are for a GPU with the budget asked")
        if c.load_in_4bit:
            out_notes.append("4-bit loading needs CUDA; on the CPU the weights load in bf16")
    return MemoryPlan(
        fits=fits, backend=backend, device="cuda" if gpu else "cpu", budget_bytes=budget, n_ctx=n_ctx,
        n_layers=layout.arch.n_layers, n_gpu_layers=k, output_on_gpu=output, weights_bytes=weights,
        weights_total_bytes=layout.total_bytes, kv_cache_type=c.kv_type, kv_bytes_per_token=kv_tok,
        kv_bytes=kv, reserve_bytes=reserve, total_bytes=weights + kv + reserve, load_in_4bit=c.load_in_4bit,
        trained_ctx=layout.arch.trained_ctx, source=layout.source, notes=tuple(out_notes))


def _with_suggestion(plan: MemoryPlan, layout: WeightsLayout, c: _Costs, *, backend: str, vram_gb: float,
                     ctx: int | None, need: int, budget: int, kv_cache_type: str, profile: Profile | None,
                     fit_ctx: int, forced: bool) -> MemoryPlan:
    hints: list[str] = []
    if ctx and fit_ctx >= MIN_CTX and not forced:
        hints.append(f"lower AGENT_CTX/--ctx to {fit_ctx:,} (the largest that fits)")
    if backend == "transformers":  # the same backend, a smaller model (GGUF files would be dequantized)
        candidates = sorted((p for p in PROFILES if p.format == "hf" and p.arch.n_params < layout.arch.n_params),
                            key=lambda p: -p.arch.n_params)
        how = " --backend transformers"
    elif profile is not None:
        candidates, how = smaller_alternatives(profile), ""
    else:
        candidates = sorted((p for p in PROFILES if p.format == "gguf" and p.size_bytes < layout.total_bytes),
                            key=lambda p: -p.size_bytes)
        how = ""
    for alt in candidates:
        # the budget actually planned for (a busy GPU's free memory, when less than AGENT_VRAM_GB)
        alt_plan = plan_memory(layout_from_profile(alt), backend=backend, vram_gb=budget / GiB, ctx=ctx,
                               kv_cache_type=kv_cache_type, gpu=None, suggest=False)
        if alt_plan.fits:
            four = " in 4-bit" if alt_plan.load_in_4bit else ""
            hints.append(f"use {alt.id} ({alt.size_bytes / 1e9:.2f} GB), which fits{four} with {alt_plan.n_ctx:,} "
                         f"tokens of context: bash runsv.sh --profile {alt.id}{how}")
            break
    if backend == "llamacpp" and not forced:
        per_layer = max(c.per_layer) if c.per_layer else 0
        per_layer_kv = c.kv_per_token // max(layout.arch.n_layers, 1) * need
        room = budget - c.fixed_reserve - c.per_token_reserve * need
        k = min(layout.arch.n_layers - 1, room // (per_layer + per_layer_kv)) if room > 0 and per_layer else 0
        if k > 0:
            hints.append(f"or keep this model and run {k} of {layout.arch.n_layers} layers on the GPU, the rest on "
                         f"the CPU (slower): AGENT_N_GPU_LAYERS={k}")
    if not hints:
        hints.append(f"nothing in the profiles fits {vram_gb:g} GiB; raise AGENT_VRAM_GB if the GPU has more, "
                     "or serve on the CPU")
    return replace(plan, suggestion="; ".join(hints))
