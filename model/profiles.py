"""Declarative profiles of the models this server knows how to fetch and plan for.

A profile names one set of weights on the Hugging Face hub (a GGUF quantization, or the bf16
safetensors of the original model), with the architecture numbers the memory planner needs before
the file is on disk. Once a file is on disk, the planner reads the exact figures from it instead.

Sources (checked November 2026):
- Architecture: each model's ``config.json`` on the hub (``Qwen/Qwen2.5-Coder-<N>B-Instruct``):
  ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``,
  ``intermediate_size``, ``vocab_size``, ``max_position_embeddings`` (32,768: the trained context;
  the model cards describe YaRN scaling beyond it, which this server does not turn on). Head dim is
  ``hidden_size / num_attention_heads``. Parameter counts are from the model cards.
- GGUF file sizes: the hub's file listings of llama.cpp quantizations of these models
  (e.g. ``Qwen2.5-Coder-7B-Instruct``: Q4_K_M 4.68 GB, Q5_K_M 5.44 GB, Q6_K 6.25 GB, Q8_0 8.1 GB),
  rounded as the hub shows them (decimal GB). Only used to plan before a download.
- File names and split parts: the ``Qwen/Qwen2.5-Coder-7B-Instruct-GGUF`` model card says large
  files are split into segments named ``<name>-00001-of-0000N.gguf`` (llama.cpp's ``gguf-split``
  layout, which llama.cpp loads directly from the first part). The downloader does not trust the
  part counts below blindly: when a listed name is missing on the hub it asks the hub for the
  repository's file list and takes whatever single file or split set is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import ConfigError

GB = 1_000_000_000  # the hub lists sizes in decimal gigabytes

DEFAULT_PROFILE_ID = "qwen2.5-coder-7b-instruct-q4_k_m"
TRAINED_CONTEXT = 32_768


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only transformer that decide its memory use."""

    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    trained_ctx: int
    tied_embeddings: bool
    n_params: int  # total, from the model card

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size


@dataclass(frozen=True)
class Profile:
    """One downloadable set of weights."""

    id: str
    family: str  # e.g. "qwen2.5-coder-7b-instruct"
    format: Literal["gguf", "hf"]
    quant: str  # "q4_k_m" … for GGUF, "bf16" for Hugging Face weights
    repo: str
    files: tuple[str, ...]  # GGUF: the file or its split parts, first part first; HF: empty (whole repo)
    size_bytes: int  # published size of the weights (approximate until the file is on disk)
    arch: Architecture

    @property
    def local_name(self) -> str:
        """The file (GGUF, first part for split sets) or folder (HF) name under ``model/weights/``."""
        return self.files[0] if self.format == "gguf" else self.repo.split("/")[-1]

    @property
    def label(self) -> str:
        return f"{self.family} {self.quant.upper()}" if self.format == "gguf" else f"{self.family} (bf16)"


# config.json of each Qwen/Qwen2.5-Coder-<N>B-Instruct; parameter counts from the model cards.
_ARCH: dict[str, Architecture] = {
    "0.5b": Architecture(n_layers=24, hidden_size=896, n_heads=14, n_kv_heads=2, head_dim=64,
                         intermediate_size=4864, vocab_size=151_936, trained_ctx=TRAINED_CONTEXT,
                         tied_embeddings=True, n_params=494_000_000),
    "1.5b": Architecture(n_layers=28, hidden_size=1536, n_heads=12, n_kv_heads=2, head_dim=128,
                         intermediate_size=8960, vocab_size=151_936, trained_ctx=TRAINED_CONTEXT,
                         tied_embeddings=True, n_params=1_540_000_000),
    "3b": Architecture(n_layers=36, hidden_size=2048, n_heads=16, n_kv_heads=2, head_dim=128,
                       intermediate_size=11008, vocab_size=151_936, trained_ctx=TRAINED_CONTEXT,
                       tied_embeddings=True, n_params=3_090_000_000),
    "7b": Architecture(n_layers=28, hidden_size=3584, n_heads=28, n_kv_heads=4, head_dim=128,
                       intermediate_size=18944, vocab_size=152_064, trained_ctx=TRAINED_CONTEXT,
                       tied_embeddings=False, n_params=7_610_000_000),
}

# Published GGUF sizes in decimal GB (see the module docstring), and the bf16 safetensors size
# (parameters × 2 bytes).
_GGUF_SIZES: dict[str, dict[str, float]] = {
    "0.5b": {"q4_k_m": 0.398, "q5_k_m": 0.420, "q6_k": 0.506, "q8_0": 0.531},
    "1.5b": {"q4_k_m": 0.986, "q5_k_m": 1.13, "q6_k": 1.27, "q8_0": 1.65},
    "3b": {"q4_k_m": 1.93, "q5_k_m": 2.22, "q6_k": 2.54, "q8_0": 3.29},
    "7b": {"q4_k_m": 4.68, "q5_k_m": 5.44, "q6_k": 6.25, "q8_0": 8.10},
}
# Qwen's own upload splits files larger than about 4 GB into parts (7B only at these quantizations).
_GGUF_PARTS: dict[tuple[str, str], int] = {
    ("7b", "q4_k_m"): 2, ("7b", "q5_k_m"): 2, ("7b", "q6_k"): 2, ("7b", "q8_0"): 3,
}

SIZES = ("0.5b", "1.5b", "3b", "7b")
QUANTS = ("q4_k_m", "q5_k_m", "q6_k", "q8_0")  # smallest first


def _gguf_files(stem: str, parts: int) -> tuple[str, ...]:
    if parts == 1:
        return (f"{stem}.gguf",)
    return tuple(f"{stem}-{i:05d}-of-{parts:05d}.gguf" for i in range(1, parts + 1))


def _build() -> tuple[Profile, ...]:
    out: list[Profile] = []
    for size in SIZES:
        family = f"qwen2.5-coder-{size}-instruct"
        hub_size = size.upper()
        arch = _ARCH[size]
        for quant in QUANTS:
            stem = f"{family}-{quant}"
            out.append(Profile(
                id=stem, family=family, format="gguf", quant=quant,
                repo=f"Qwen/Qwen2.5-Coder-{hub_size}-Instruct-GGUF",
                files=_gguf_files(stem, _GGUF_PARTS.get((size, quant), 1)),
                size_bytes=int(_GGUF_SIZES[size][quant] * GB), arch=arch))
        out.append(Profile(
            id=family, family=family, format="hf", quant="bf16",
            repo=f"Qwen/Qwen2.5-Coder-{hub_size}-Instruct", files=(),
            size_bytes=arch.n_params * 2, arch=arch))
    return tuple(out)


PROFILES: tuple[Profile, ...] = _build()


def get_profile(profile_id: str) -> Profile:
    """The profile with this id, or a ConfigError listing the known ids."""
    wanted = profile_id.strip().lower()
    for p in PROFILES:
        if p.id == wanted:
            return p
    known = ", ".join(p.id for p in PROFILES)
    raise ConfigError(f"unknown model profile {profile_id!r} (AGENT_PROFILE / --profile); known: {known}")


def default_profile() -> Profile:
    return get_profile(DEFAULT_PROFILE_ID)


def profile_for_file(name: str) -> Profile | None:
    """The profile whose file (or first split part, or HF folder) has this name, if any."""
    lowered = name.lower()
    for p in PROFILES:
        if lowered == p.local_name.lower() or (p.format == "gguf" and lowered == f"{p.id}.gguf"):
            return p
    return None


def smaller_alternatives(profile: Profile) -> list[Profile]:
    """Profiles to suggest when ``profile`` does not fit, best first.

    Same model at smaller quantizations (largest first), then smaller models at every quantization
    (largest model first, and within a model the largest quantization first). Only GGUF profiles:
    they are what fits a small GPU.
    """
    same = [p for p in PROFILES if p.format == "gguf" and p.family == profile.family
            and p.size_bytes < profile.size_bytes]
    same.sort(key=lambda p: -p.size_bytes)
    size_rank = {s: i for i, s in enumerate(SIZES)}
    mine = next((s for s in SIZES if profile.family == f"qwen2.5-coder-{s}-instruct"), SIZES[-1])
    smaller = [p for p in PROFILES if p.format == "gguf"
               and size_rank[p.family.split("-")[2]] < size_rank[mine]]
    smaller.sort(key=lambda p: (-size_rank[p.family.split("-")[2]], -p.size_bytes))
    return same + smaller
