"""Token estimates from characters, for when no tokenizer is at hand."""

from __future__ import annotations

import math

#: Characters per token for estimates. Measured with ``bench/gate_token_estimate.py`` on this
#: repository's Python and Markdown with the Qwen2.5 and SmolLM2 tokenizers: 3.25-4.25 characters
#: per token. 3.2 sits just below all of them so an estimate errs on the side of more tokens: an
#: over-count wastes a little context, an under-count makes the server refuse the request.
CHARS_PER_TOKEN = 3.2


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the calibrated character ratio (see :data:`CHARS_PER_TOKEN`)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0
