"""Prompt-lookup drafting: guess the next tokens by copying what followed the same n-gram before.

Most of what a coding agent writes is already in its context: the ``old_string`` of an edit, a
file rewritten with one change, a name used again. The longest recent suffix of the text so far
that also occurs earlier in prompt + output predicts the next tokens (what followed it there).
The engine checks the whole guess in one batch, so each accepted token saves a forward pass.

:class:`DraftPolicy` decides how many tokens to guess from how the guesses have fared and what a
check costs against a plain step, and stops guessing for a while when it does not pay (novel text).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_NGRAM = 8  # longer matches than this are no more telling
MIN_NGRAM = 2  # a single repeated token predicts little


def find_draft(tokens: np.ndarray, k: int, *, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM) -> np.ndarray:
    """Up to ``k`` tokens that followed the longest (then most recent) earlier occurrence of the
    suffix of ``tokens``, of at least ``min_ngram`` tokens; empty when there is none."""
    n = tokens.shape[0]
    if k <= 0 or n < min_ngram + 1:
        return tokens[:0]
    # candidate ends: earlier positions holding the last token (not the last position itself)
    ends = np.flatnonzero(tokens[: n - 1] == tokens[n - 1])
    if ends.size == 0:
        return tokens[:0]
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
        return tokens[:0]
    end = int(ends[np.flatnonzero(length == best)[-1]])  # the most recent of the longest
    return tokens[end + 1: end + 1 + k]


@dataclass
class DraftPolicy:
    """Draft length and whether drafting pays, learned during one generation.

    The length doubles after a fully accepted draft and drops to just past the accepted run after
    a miss. Each check's tokens per second is compared with plain decoding's (both measured here,
    so the policy follows the machine's load); when checks fall behind, drafting pauses for a
    number of tokens that doubles with each failed return, back to ``max_pause``.
    """

    k: int = 4
    k_min: int = 1
    k_max: int = 16
    max_pause: int = 64
    plain_s: float | None = None  # seconds per plain step (moving average)
    gain: float = 1.0  # tokens per second of checks over plain steps (moving average)
    pause: int = 0  # plain steps left before drafting again
    next_pause: int = 4
    drafted: int = 0
    accepted: int = 0
    checks: int = 0

    def want(self) -> int:
        """How many tokens to draft now (0: take a plain step)."""
        if self.pause > 0:
            return 0
        return self.k

    def plain_step(self, seconds: float) -> None:
        if self.pause > 0:
            self.pause -= 1
        self.plain_s = seconds if self.plain_s is None else 0.8 * self.plain_s + 0.2 * seconds

    def checked(self, drafted: int, accepted: int, seconds: float) -> None:
        """After a check of ``drafted`` tokens of which ``accepted`` held, taking ``seconds``."""
        self.checks += 1
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.k = min(self.k_max, self.k * 2)
        else:
            self.k = max(self.k_min, accepted + 1)
        if self.plain_s is None or seconds <= 0:
            return
        ratio = (accepted + 1) / seconds * self.plain_s  # this check against plain steps over the same time
        self.gain = 0.7 * self.gain + 0.3 * ratio
        if accepted > 0 and ratio >= 1.0:
            self.next_pause = 4
        if self.gain < 1.0:
            self.pause = self.next_pause
            self.next_pause = min(self.max_pause, self.next_pause * 2)
            self.gain = 1.0  # a fresh start after the pause
