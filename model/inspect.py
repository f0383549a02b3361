"""What is inside a weights file: architecture numbers and the bytes of every tensor group.

Reads a GGUF file's header (its metadata and tensor table, every split part of a split set) or a
Hugging Face folder's ``config.json`` and safetensors headers, without loading any weights. The
memory planner turns the result into a plan.

The GGUF header is scanned here rather than with ``gguf.GGUFReader``: the reader decodes the whole
150,000-token vocabulary into numpy arrays (about 6 s for a Qwen file on this project's machines),
while the planner only needs a dozen numbers and the tensor table. Block sizes of the quantization
types come from the ``gguf`` package, so new types are covered when it is upgraded.
"""

from __future__ import annotations

import json
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from core.errors import ModelNotFound
from model.profiles import Architecture, Profile

_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<idx>\d{5})-of-(?P<count>\d{5})\.gguf$")
_LAYER_RE = re.compile(r"^(?:blk|model\.layers|layers)\.(\d+)\.")


@dataclass(frozen=True)
class WeightsLayout:
    """Bytes of the weights grouped the way the engines place them on devices."""

    format: str  # "gguf" | "hf"
    dtype: str  # GGUF file type ("Q4_K_M" …) or torch dtype ("bfloat16" …)
    layer_bytes: tuple[int, ...]  # one entry per transformer block
    embed_bytes: int  # input token embedding (llama.cpp keeps it in host memory)
    head_bytes: int  # output norm + output projection (absent when tied to the embedding)
    arch: Architecture
    source: str  # where the numbers came from, for the plan's printout
    quantized: str | None = None  # HF: an existing quantization_config method ("bitsandbytes", "awq" …)

    @property
    def total_bytes(self) -> int:
        return sum(self.layer_bytes) + self.embed_bytes + self.head_bytes


def split_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF set given any one part (the file itself when not split)."""
    m = _SPLIT_RE.match(path.name)
    if not m:
        return [path]
    count = int(m["count"])
    return [path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def inspect_weights(path: Path) -> WeightsLayout:
    """The layout of a GGUF file (or split set) or a Hugging Face folder."""
    if path.is_dir():
        return _inspect_hf(path)
    if not path.is_file():
        raise ModelNotFound(f"model file not found: {path}")
    return _inspect_gguf(path)


def layout_from_profile(profile: Profile) -> WeightsLayout:
    """An estimate from the profile's published size, for planning before the download.

    The published size is spread over the blocks in proportion to their parameters; embedding and
    head get their share likewise. Close to the real table (the mix of quantization types per tensor
    is not known until the file is read), and what the plan prints says it is an estimate.
    """
    a = profile.arch
    per_layer_params = (a.hidden_size * (a.n_heads * a.head_dim) * 2  # q, o
                        + a.hidden_size * (a.n_kv_heads * a.head_dim) * 2  # k, v
                        + a.hidden_size * a.intermediate_size * 3)  # gate, up, down
    embed = a.embedding_params
    head = 0 if a.tied_embeddings else a.embedding_params
    total_params = per_layer_params * a.n_layers + embed + head
    scale = profile.size_bytes / total_params
    return WeightsLayout(
        format=profile.format, dtype=profile.quant.upper() if profile.format == "gguf" else "bfloat16",
        layer_bytes=(int(per_layer_params * scale),) * a.n_layers,
        embed_bytes=int(embed * scale), head_bytes=int(head * scale), arch=a,
        source=f"profile {profile.id} (published size, estimate until downloaded)")


# --- GGUF -----------------------------------------------------------------------------------------

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Header:
    """A cursor over a memory-mapped GGUF header."""

    def __init__(self, buf: mmap.mmap, name: str) -> None:
        self.buf, self.pos, self.name = buf, 0, name

    def take(self, fmt: str) -> int | float | bool:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = int(self.take("<Q"))
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> object:
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = int(self.take("<I")), int(self.take("<Q"))
            if etype in _SCALAR:  # skip numeric arrays (token types, scores) without decoding them
                self.pos += struct.calcsize(_SCALAR[etype]) * count
                return count
            for _ in range(count):  # arrays of strings: vocabulary, merges
                self.value(etype)
            return count
        raise ValueError(f"unknown GGUF value type {vtype}")


def _read_gguf_header(path: Path) -> tuple[dict[str, object], list[tuple[str, list[int], int]]]:
    with path.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise ModelNotFound(f"{path} is empty, not a GGUF model") from None
    with buf:
        try:
            if buf[:4] != b"GGUF":
                raise ModelNotFound(f"{path} is not a GGUF file (no GGUF magic number)")
            h = _Header(buf, path.name)
            h.pos = 4
            version = int(h.take("<I"))
            if version < 2:
                raise ModelNotFound(f"{path} is GGUF version {version}; convert it with a current llama.cpp")
            n_tensors, n_kv = int(h.take("<Q")), int(h.take("<Q"))
            meta: dict[str, object] = {}
            for _ in range(n_kv):
                key = h.string()
                meta[key] = h.value(int(h.take("<I")))
            tensors = []
            for _ in range(n_tensors):
                name = h.string()
                dims = [int(h.take("<Q")) for _ in range(int(h.take("<I")))]
                ttype = int(h.take("<I"))
                h.take("<Q")  # offset
                tensors.append((name, dims, ttype))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise ModelNotFound(f"{path} is not a readable GGUF file (truncated or damaged: {exc})") from None
    return meta, tensors


def _tensor_bytes(path: Path, name: str, dims: list[int], ttype: int) -> int:
    n = 1
    for d in dims:
        n *= d
    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        raise ModelNotFound(f"{path.name}: tensor {name} has type {ttype}, unknown to the installed gguf package",
                            hint="upgrade it: pip install -U gguf") from None
    return n // block * size


def _as_int(value: object, default: int = 0) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _file_type(value: object) -> str:
    """``general.file_type`` as llama.cpp names it (``Q4_K_M`` …)."""
    try:
        return gguf.LlamaFileType(_as_int(value, -1)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return "unknown" if value is None else f"file type {value}"


def _inspect_gguf(path: Path) -> WeightsLayout:
    parts = split_parts(path)
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ModelNotFound(f"split GGUF {path.name} is incomplete: missing {', '.join(missing)} "
                            f"in {path.parent}")
    meta, _ = _read_gguf_header(parts[0])
    tensors: list[tuple[str, list[int], int]] = []
    for part in parts:
        tensors.extend(_read_gguf_header(part)[1])
    arch_name = str(meta.get("general.architecture", ""))

    def num(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch_name}.{key}", default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ModelNotFound(f"{path.name} lacks {arch_name}.{key} in its metadata; not a model file")
        return int(value)

    if not tensors:
        raise ModelNotFound(f"{path.name} holds no tensors (a vocabulary-only GGUF?); not a model to serve")

    n_layers = num("block_count")
    hidden = num("embedding_length")
    heads = num("attention.head_count")
    kv_heads = num("attention.head_count_kv", heads)
    head_dim = num("attention.key_length", hidden // heads)
    layer = [0] * n_layers
    embed = head = 0
    n_params = 0
    vocab = 0
    has_output = False
    for name, dims, ttype in tensors:
        nbytes = _tensor_bytes(path, name, dims, ttype)
        n = 1
        for d in dims:
            n *= d
        n_params += n
        m = _LAYER_RE.match(name)
        if m and int(m.group(1)) < n_layers:
            layer[int(m.group(1))] += nbytes
        elif name.startswith("token_embd."):
            embed += nbytes
            vocab = dims[-1] if dims else 0
        else:
            head += nbytes
            has_output = has_output or name == "output.weight"
    vocab = vocab or _as_int(meta.get(f"{arch_name}.vocab_size"), _as_int(meta.get("tokenizer.ggml.tokens")))
    dtype = _file_type(meta.get("general.file_type"))
    arch = Architecture(
        n_layers=n_layers, hidden_size=hidden, n_heads=heads, n_kv_heads=kv_heads, head_dim=head_dim,
        intermediate_size=num("feed_forward_length", 4 * hidden), vocab_size=vocab,
        trained_ctx=num("context_length", 2048), tied_embeddings=not has_output, n_params=n_params)
    shown = parts[0].name if len(parts) == 1 else f"{parts[0].name} (+{len(parts) - 1} parts)"
    return WeightsLayout(format="gguf", dtype=dtype, layer_bytes=tuple(layer), embed_bytes=embed,
                         head_bytes=head, arch=arch, source=f"GGUF tensor table of {shown}")


# --- Hugging Face folders -----------------------------------------------------------------------

def _safetensors_header(path: Path) -> dict[str, dict]:
    with path.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ModelNotFound(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw_len)
        if n > 100_000_000:
            raise ModelNotFound(f"{path} is not a safetensors file (header length {n})")
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            raise ModelNotFound(f"{path} is not a safetensors file (bad header)") from None
    header.pop("__metadata__", None)
    return header


def _inspect_hf(folder: Path) -> WeightsLayout:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelNotFound(f"{folder} has no config.json; not a Hugging Face model folder")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelNotFound(f"{config_path} is not valid JSON: {exc}") from None
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ModelNotFound(f"{folder} has no *.safetensors weights (only safetensors folders are served)")
    n_layers = int(cfg["num_hidden_layers"])
    layer = [0] * n_layers
    embed = head = 0
    dtypes: dict[str, int] = {}
    n_params = 0
    for shard in shards:
        for name, info in _safetensors_header(shard).items():
            n = 1
            for d in info.get("shape", []):
                n *= int(d)
            start, end = info.get("data_offsets", [0, 0])
            nbytes = int(end) - int(start)
            n_params += n
            dtypes[info.get("dtype", "?")] = dtypes.get(info.get("dtype", "?"), 0) + nbytes
            m = _LAYER_RE.match(name)
            if m and int(m.group(1)) < n_layers:
                layer[int(m.group(1))] += nbytes
            elif "embed_tokens" in name:
                embed += nbytes
            else:
                head += nbytes
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    arch = Architecture(
        n_layers=n_layers, hidden_size=hidden, n_heads=heads,
        n_kv_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate_size=int(cfg.get("intermediate_size", 4 * hidden)),
        vocab_size=int(cfg.get("vocab_size", 0)),
        trained_ctx=int(cfg.get("max_position_embeddings", 2048)),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)), n_params=n_params)
    main_dtype = max(dtypes, key=dtypes.__getitem__)
    torch_names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
    quant = cfg.get("quantization_config", {}).get("quant_method") if isinstance(cfg.get("quantization_config"), dict) else None
    return WeightsLayout(format="hf", dtype=torch_names.get(main_dtype, main_dtype.lower()),
                         layer_bytes=tuple(layer), embed_bytes=embed, head_bytes=head, arch=arch,
                         source=f"safetensors headers of {folder.name} ({len(shards)} file(s))",
                         quantized=quant)
