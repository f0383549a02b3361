"""Prompt-lookup drafting: guess the next tokens by copying what followed the same n-gram before.

Most of what a coding agent writes is already in its context: the ``old_string`` of an edit, a
file rewritten with one change, a name used again. The longest recent suffix of the text so far
that also occurs earlier in prompt + output predicts the next tokens (what followed it there).
The engine checks the whole guess in one batch, so each accepted token saves a forward pass.

:class:`DraftPolicy` decides how many tokens to guess from how the guesses have fared and what a
check costs against a plain step, and stops guessing for a while when it does not pay (novel text).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_NGRAM = 8  # longer matches than this are no more telling
MIN_NGRAM = 2  # a single repeated token predicts little


def find_draft(tokens: np.ndarray, k: int, *, max_ngram: int = MAX_NGRAM,
               min_ngram: int = MIN_NGRAM) -> tuple[np.ndarray, int]:
    """``(draft, n)``: up to ``k`` tokens that followed the longest (then most recent) earlier
    occurrence of the suffix of ``tokens``, and that suffix's length ``n`` (at least ``min_ngram``,
    at most ``max_ngram``); ``(empty, 0)`` when there is none."""
    n = tokens.shape[0]
    none = (tokens[:0], 0)
    if k <= 0 or n < min_ngram + 1:
        return none
    # candidate ends: earlier positions holding the last token (not the last position itself)
    ends = np.flatnonzero(tokens[: n - 1] == tokens[n - 1])
    if ends.size == 0:
        return none
    length = np.ones(ends.shape[0], dtype=np.int64)
    alive = np.ones(ends.shape[0], dtype=bool)
    for back in range(1, max_ngram):
        if n - 1 - back < 0:
            break
        pos = ends - back
        ok = alive & (pos >= 0)
        ok[ok] = tokens[pos[ok]] == tokens[n - 1 - back]
        if not ok.any():
            break
        length[ok] += 1
        alive = ok
    best = int(length.max())
    if best < min_ngram:
        return none
    end = int(ends[np.flatnonzero(length == best)[-1]])  # the most recent of the longest
    draft = tokens[end + 1: end + 1 + k]
    return (draft, best) if draft.size else none


# How often a drafted token holds depends most on how long the match behind it is (measured on
# the docstring workload of bench/decode_bench.py: 37 % after a 2-token match, 82 % after 8 or
# more), so the rate is learned per match length; these priors start each generation.
_PRIOR_HIT_RATE = {2: 0.5, 3: 0.6, 4: 0.7, 5: 0.7, 6: 0.75, 7: 0.75, 8: 0.8}


@dataclass
class _Bucket:
    hits: float
    misses: float
    skip: int = 0  # matches of this length left to pass over before drafting on one again
    next_skip: int = 4
    probe: bool = False  # after skipping: one 1-token draft, whatever the estimate, to measure again


@dataclass
class DraftPolicy:
    """Draft length and whether drafting pays, learned during one generation.

    Two things are measured as the generation runs: how often a drafted token holds, per length of
    the match that proposed it (decayed, so that recent checks count most), and what a check
    costs: a plain step's seconds and the extra seconds per drafted token in a check (on a CPU each
    row of a batch costs real compute: a 16-token check of Qwen2.5-0.5B costs several plain steps).
    The draft length is the one with the most expected tokens per second, ``(1 - a^(k+1)) / (1 - a)``
    tokens for ``plain + k * extra`` seconds, where ``a`` is the hit rate; when no length beats a
    plain step, matches of that length are passed over for a number of times that doubles each
    time, up to ``max_pause``, and then probed with a 1-token draft (novel text costs little; a
    copy found later still pays).
    """

    k_max: int = 16
    max_pause: int = 64
    plain_s: float | None = None  # seconds per plain step (moving average)
    extra_s: float | None = None  # extra seconds per drafted token in a check (moving average)
    drafted: int = 0
    accepted: int = 0
    checks: int = 0
    buckets: dict[int, _Bucket] = field(default_factory=dict)

    def bucket(self, match: int) -> _Bucket:
        key = min(match, 8)
        if key not in self.buckets:
            a = _PRIOR_HIT_RATE.get(key, 0.5)
            self.buckets[key] = _Bucket(hits=4 * a, misses=4 * (1 - a))
        return self.buckets[key]

    def hit_rate(self, match: int) -> float:
        b = self.bucket(match)
        return b.hits / (b.hits + b.misses)

    def want(self, match: int) -> int:
        """How many tokens to draft after a match of ``match`` tokens (0: take a plain step)."""
        b = self.bucket(match)
        if b.skip > 0:
            b.skip -= 1
            return 0
        if b.probe:
            b.probe = False
            return 1
        a = min(self.hit_rate(match), 0.999)
        r = 0.3 if self.plain_s is None or self.extra_s is None else self.extra_s / self.plain_s
        best_k, best = 0, 1.0
        for k in range(1, self.k_max + 1):
            gain = (1 - a ** (k + 1)) / (1 - a) / (1 + r * k)
            if gain > best:
                best_k, best = k, gain
        if best_k == 0:
            b.skip, b.next_skip = b.next_skip, min(self.max_pause, b.next_skip * 2)
            b.probe = True
        return best_k

    def plain_step(self, seconds: float) -> None:
        self.plain_s = seconds if self.plain_s is None else 0.8 * self.plain_s + 0.2 * seconds

    def checked(self, match: int, drafted: int, accepted: int, seconds: float) -> None:
        """After a check of ``drafted`` tokens (proposed by a ``match``-token match) of which
        ``accepted`` held, taking ``seconds``."""
        self.checks += 1
        self.drafted += drafted
        self.accepted += accepted
        b = self.bucket(match)
        b.hits = 0.8 * b.hits + accepted
        b.misses = 0.8 * b.misses + (1 if accepted < drafted else 0)
        if accepted > 0:
            b.next_skip = 4
        if self.plain_s is not None and drafted > 0:
            extra = max(0.0, seconds - self.plain_s) / drafted
            self.extra_s = extra if self.extra_s is None else 0.7 * self.extra_s + 0.3 * extra
