"""Entropy coding of token indices with `constriction`'s range coder, from integer tables.

The prior gives probabilities in fp32. Encoder and decoder must hand the range coder the very
same table for every token, or decoding derails. So probabilities are first quantised here, in
float64 numpy arithmetic that is exact and the same everywhere, to integer counts: every symbol
at least 1 (any token stays codable), each row summing to exactly 2^PRECISION. The coder is then
given `counts - 1`: constriction's fast ("leaky") quantisation maps weights w to
floor(w * (2^P - V) / sum(w)) + 1, which for integer weights summing to exactly 2^P - V is
w + 1, so the coder's fixed-point table *is* `counts`, and the code length of a token is
-log2(count / 2^P) to within the coder's constant overhead (a test pins this).

No symbol gets more than 1 - 2^-8 of a row (`MAX_COUNT`): so every token costs at least
`MIN_TOKEN_BITS` (0.0056 bits, at most 0.36 bits more per 64-token tile than an uncapped
table), and a file's payload bounds the number of tokens it can hold. A decoder can then refuse
a header that claims more tokens than its payload could carry, before doing any work: decoding
time is bounded by the file's size, whatever a crafted header says.

Legend: B rows (tiles coded together), V vocabulary.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

PRECISION = 24
"""Bits of constriction's default range coder probabilities (its `DefaultRangeEncoder`)."""
TOTAL = 1 << PRECISION
MAX_COUNT = TOTAL - (TOTAL >> 8)
"""The largest count of one symbol: probability 1 - 2^-8."""
MIN_TOKEN_BITS = -math.log2(MAX_COUNT / TOTAL)
"""The least a token can cost, so a payload of b bits holds at most about b / MIN_TOKEN_BITS."""
CODER_SLACK_BITS = 64
"""How far a range-coded payload may fall short of the ideal code length (a test pins it)."""
# constriction's submodules are attributes of its extension module, not importable by name
_FAMILY = constriction.stream.model.Categorical(perfect=False)  # tables given per row


def quantize(probs: np.ndarray) -> np.ndarray:
    """Probabilities (B, V), rows summing to about 1 -> integer counts (B, V) int64, each
    >= 1, each row summing to exactly 2^PRECISION.

    Each count is floor(p * (2^P - V)) + 1; what rounding leaves over (a few counts, either
    sign) goes to the row's most likely symbol (the lowest index among equals), which keeps it
    far above 1 and costs nothing measurable. A most likely symbol above `MAX_COUNT` gives its
    excess to the runner-up.
    """
    assert probs.ndim == 2, f"probs must be (B, V), got {probs.shape}"
    p = probs.astype(np.float64)
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("the prior gave probabilities that are negative, NaN or infinite")
    p = p / p.sum(axis=1, keepdims=True)
    v = p.shape[1]
    assert 2 <= v <= TOTAL >> 8, f"vocabulary {v} does not fit {PRECISION}-bit probabilities"
    counts = np.floor(p * (TOTAL - v)).astype(np.int64) + 1
    rows = np.arange(len(counts))
    top = counts.argmax(axis=1)
    counts[rows, top] += TOTAL - counts.sum(axis=1)
    excess = np.maximum(counts[rows, top] - MAX_COUNT, 0)
    counts[rows, top] -= excess
    runner_up = np.where(np.arange(v) == top[:, None], -1, counts).argmax(axis=1)
    counts[rows, runner_up] += excess
    return counts


def code_length(counts: np.ndarray, symbols: np.ndarray) -> float:
    """Ideal code length in bits of `symbols` (B,) under the integer tables `counts` (B, V)."""
    chosen = counts[np.arange(len(symbols)), symbols]
    return float(-np.log2(chosen / TOTAL).sum())


def _weights(counts: np.ndarray) -> np.ndarray:
    # counts - 1 sums to 2^P - V exactly (see the module docstring): the coder's table is counts
    return (counts - 1).astype(np.float64)


class TokenEncoder:
    """Range-codes rows of tokens, each with its own integer table; `finish` gives the bytes."""

    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, counts: np.ndarray) -> None:
        """Append `symbols` (B,) int, coded with `counts` (B, V)."""
        assert symbols.shape == (len(counts),), f"got {symbols.shape} and {counts.shape}"
        self._coder.encode(symbols.astype(np.int32), _FAMILY, _weights(counts))

    def finish(self) -> bytes:
        """The payload: the coder's 32-bit words, little-endian."""
        return self._coder.get_compressed().astype("<u4").tobytes()


class TokenDecoder:
    """Decodes what `TokenEncoder` wrote, given the same tables in the same order.

    Raises ValueError (never constriction's own exception types) when the payload cannot be
    decoded with the tables given, or, at `finish`, when it holds more than was decoded.
    """

    def __init__(self, payload: bytes):
        assert len(payload) % 4 == 0, f"payload must be 32-bit words, got {len(payload)} bytes"
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        self._coder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, counts: np.ndarray) -> np.ndarray:
        """(B,) int64 tokens decoded with `counts` (B, V)."""
        try:
            return self._coder.decode(_FAMILY, _weights(counts)).astype(np.int64)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - a Rust panic surfaces as a BaseException
            raise ValueError(f"the payload does not decode ({e})") from None

    def finish(self) -> None:
        """Check that the payload held nothing after the last token."""
        if not self._coder.maybe_exhausted():
            raise ValueError("the payload holds data after its last token")
