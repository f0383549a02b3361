"""Token choice from one row of logits, in numpy, keyed by the request's seed and the token's position.

The llama.cpp engine samples here rather than in llama.cpp's sampler chain so that speculative
decoding stays exact and a ``seed`` repeats whatever was drafted:

- Sampling is Gumbel-max: the token is ``argmax(logits / T + g)`` where ``g`` is Gumbel noise that
  depends only on (seed, position in the output, token id), drawn from a counter-based hash. That
  is an exact draw from the softmax, and the token at a position does not depend on how many
  random numbers earlier steps used, so drafting (which the policy adapts to the wall clock) can
  never change what a seed gives.
- A drafted token is accepted when it is that argmax. So it is accepted with probability p(draft),
  and when it is not, the token that comes out is distributed as p with the draft removed and
  renormalised: the standard acceptance rule for a deterministic draft, with the noise shared
  between the draft check and plain sampling. Output is the model's distribution, exactly.

The distribution is the one llama-cpp-python's chain gave for the same settings: presence and
frequency penalties over the tokens generated so far, then temperature, then top-p (nucleus).
Temperature 0 is greedy (the first highest logit).
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

_TOP_P_CANDIDATES = 1024  # top-p usually keeps far fewer; a full sort of 151k logits costs ~10 ms
# Tokens more than this many nats below the best cannot win a Gumbel-max draw but with odds of
# about vocab * e^-40 (1e-12 for 151k tokens); leaving them out saves hashing the whole vocabulary.
_GUMBEL_REACH = 40.0


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def gumbel(seed: int, position: int, ids: np.ndarray) -> np.ndarray:
    """Gumbel(0, 1) noise for tokens ``ids`` at output ``position``, a pure function of its inputs."""
    key = _mix(np.array([(seed + position * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    h = _mix(ids.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03) + key)  # arrays wrap silently
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))  # in (0, 1)
    return -np.log(-np.log(u))


class Sampler:
    """Picks tokens for one generation; ``seed`` None draws a fresh one from the OS."""

    def __init__(self, *, temperature: float, top_p: float = 1.0, seed: int | None = None,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.seed = int.from_bytes(os.urandom(8), "little") if seed is None else seed % (1 << 64)
        self.counts: Counter[int] = Counter()  # generated tokens, for the penalties

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def accept(self, token: int) -> None:
        """Record ``token`` as generated (it counts towards the penalties from now on)."""
        if self.presence_penalty or self.frequency_penalty:
            self.counts[token] += 1

    def _penalised(self, logits: np.ndarray) -> np.ndarray:
        if not self.counts:
            return logits
        out = logits.astype(np.float32, copy=True)
        ids = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
        n = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
        out[ids] -= n * self.frequency_penalty + self.presence_penalty
        return out

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scaled logits)`` of the tokens that can be drawn: the top-p set (all when
        ``top_p`` is 1, less those that cannot win a draw). Not for greedy samplers."""
        z = self._penalised(logits)
        if self.top_p >= 1.0:
            ids = np.flatnonzero(z >= z.max() - _GUMBEL_REACH * self.temperature)
            return ids, z[ids] / self.temperature
        n = min(_TOP_P_CANDIDATES, z.shape[0])
        ids = np.argpartition(-z, n - 1)[:n] if n < z.shape[0] else np.arange(z.shape[0])
        ids = ids[np.argsort(-z[ids], kind="stable")]
        full = np.exp((z - z[ids[0]]) / self.temperature, dtype=np.float64)
        total = full.sum()
        cum = np.cumsum(full[ids]) / total
        if cum[-1] < self.top_p:  # a flat distribution: the candidates do not reach top_p
            ids = np.argsort(-z, kind="stable")
            cum = np.cumsum(full[ids]) / total
        keep = max(1, int(np.searchsorted(cum, self.top_p)) + 1)
        ids = ids[:keep]
        return ids, z[ids] / self.temperature

    def probs(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(p, ids)``: the sampling distribution over ``ids`` (for tests and logprob-like uses)."""
        ids, scaled = self.candidates(logits)
        p = np.exp(scaled - scaled.max(), dtype=np.float64)
        return p / p.sum(), ids

    def sample(self, logits: np.ndarray, position: int) -> int:
        """The token at output ``position`` (0 for the first generated token) from a row of logits."""
        if self.greedy:
            return int(np.argmax(self._penalised(logits)))
        ids, scaled = self.candidates(logits)
        return int(ids[np.argmax(scaled + gumbel(self.seed, position, ids))])

    def verify(self, logits: np.ndarray, draft: int, position: int) -> tuple[bool, int]:
        """Check a drafted token: ``(True, draft)`` when it is what :meth:`sample` gives at this
        position, else ``(False, token)`` with that token. See the module's docstring for why this
        is the standard acceptance rule and keeps the output distribution exactly the model's."""
        token = self.sample(logits, position)
        return token == draft, token
