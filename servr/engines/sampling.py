"""Token choice from one row of logits, in numpy, with its own seeded generator.

The llama.cpp engine samples here rather than in llama.cpp's sampler chain for two reasons: a
request's ``seed`` then fixes every draw (one ``numpy`` generator per request, nothing shared
with earlier requests), and speculative decoding needs the whole distribution ``p`` to accept or
reject a drafted token (:meth:`Sampler.verify`), which a chain that only returns a token hides.

The distribution is the one llama-cpp-python's chain gave for the same settings: presence and
frequency penalties over the tokens generated so far, then temperature, then top-p (nucleus).
Temperature 0 is greedy (the first highest logit).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

_TOP_P_CANDIDATES = 1024  # top-p usually keeps far fewer; a full sort of 151k logits costs ~10 ms


class Sampler:
    """Picks tokens for one generation; ``seed`` None draws fresh entropy."""

    def __init__(self, *, temperature: float, top_p: float = 1.0, seed: int | None = None,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.rng = np.random.default_rng(None if seed is None else seed % (1 << 64))
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

    def probs(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The sampling distribution of a row: ``(p, ids)``, p over ``ids`` (or over the whole
        vocabulary when ``ids`` is None). Not for greedy samplers."""
        z = self._penalised(logits)
        if self.top_p >= 1.0:
            p = np.exp((z - z.max()) / self.temperature, dtype=np.float64)
            return p / p.sum(), None
        n = min(_TOP_P_CANDIDATES, z.shape[0])
        ids = np.argpartition(-z, n - 1)[:n] if n < z.shape[0] else np.arange(z.shape[0])
        ids = ids[np.argsort(-z[ids], kind="stable")]
        full = np.exp((z - z[ids[0]]) / self.temperature, dtype=np.float64)
        total = full.sum()
        cum = np.cumsum(full[ids]) / total
        if cum[-1] < self.top_p:  # a flat distribution: the candidates do not reach top_p
            ids = np.argsort(-z, kind="stable")
            cum = np.cumsum(full[ids]) / total
        keep = int(np.searchsorted(cum, self.top_p)) + 1
        ids = ids[: max(1, keep)]
        p = full[ids]
        return p / p.sum(), ids

    def _draw(self, p: np.ndarray, ids: np.ndarray | None) -> int:
        i = int(np.searchsorted(np.cumsum(p), self.rng.random() * p.sum(), side="right"))
        i = min(i, p.shape[0] - 1)
        return int(ids[i]) if ids is not None else i

    def sample(self, logits: np.ndarray) -> int:
        """One token from a row of logits."""
        if self.greedy:
            return int(np.argmax(self._penalised(logits)))
        p, ids = self.probs(logits)
        return self._draw(p, ids)

    def verify(self, logits: np.ndarray, draft: int) -> tuple[bool, int]:
        """Speculative check of a deterministic draft token against a row of logits.

        ``(True, draft)`` when accepted, else ``(False, token)`` with the token to use instead.
        Greedy: accepted when it is the argmax. Sampling: accepted with probability p(draft);
        otherwise a token is drawn from p with the draft removed and renormalised. Either way the
        token that comes out is distributed exactly as :meth:`sample`'s (the standard rule for a
        draft distribution that puts all its mass on one token).
        """
        if self.greedy:
            best = int(np.argmax(self._penalised(logits)))
            return best == draft, best
        p, ids = self.probs(logits)
        if ids is None:
            pd = float(p[draft])
            where = draft
        else:
            hit = np.flatnonzero(ids == draft)
            pd = float(p[hit[0]]) if hit.size else 0.0
            where = int(hit[0]) if hit.size else -1
        if pd > 0.0 and self.rng.random() < pd:
            return True, draft
        if where >= 0:
            p = p.copy()
            p[where] = 0.0
            if p.sum() <= 0.0:  # the draft held all the mass (and lost the draw to rounding)
                return True, draft
        return False, self._draw(p, ids)
