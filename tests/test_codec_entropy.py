"""Integer tables and the range coder: exact tables, ideal code lengths, clean failures."""

from __future__ import annotations

import numpy as np
import pytest

from latentlab.codec.entropy import (
    CODER_SLACK_BITS,
    MAX_COUNT,
    MIN_TOKEN_BITS,
    TOTAL,
    TokenDecoder,
    TokenEncoder,
    code_length,
    quantize,
)


def tables(rows: int, vocab: int, concentration: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(vocab, concentration), size=rows)


@pytest.mark.parametrize(("vocab", "concentration"), [(2, 1.0), (32, 0.05), (1024, 0.01),
                                                      (65536, 0.5)])
def test_counts_sum_exactly_keep_every_symbol_and_follow_the_probabilities(vocab, concentration):
    probs = tables(16, vocab, concentration).astype(np.float32)
    counts = quantize(probs)
    assert counts.dtype == np.int64 and counts.shape == probs.shape
    assert (counts.sum(axis=1) == TOTAL).all()
    assert counts.min() >= 1 and counts.max() <= MAX_COUNT
    # each count is within V + 1 of p * 2^24, except where the cap moved mass
    uncapped = probs.max(axis=1) < 0.99
    err = np.abs(counts - probs.astype(np.float64) * TOTAL)[uncapped]
    assert err.max() <= vocab + 1


def test_a_certain_symbol_is_capped_and_its_excess_goes_to_the_runner_up():
    probs = np.zeros((2, 8), np.float32)
    probs[0, 3] = 1.0
    probs[1, [2, 5]] = [0.999999, 1e-6]
    counts = quantize(probs)
    assert (counts[:, [3, 2]].diagonal() == MAX_COUNT).all()
    assert counts[1, 5] == counts[1].max(initial=0, where=np.arange(8) != 2)
    assert (counts.sum(axis=1) == TOTAL).all()


def test_quantize_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([[0.5, np.nan]]))


@pytest.mark.parametrize(("vocab", "concentration"), [(8, 0.02), (128, 0.1), (4096, 1.0)])
def test_coded_length_is_the_ideal_length_of_the_integer_tables(vocab, concentration):
    """constriction must code with exactly our tables (module docstring of entropy.py): then
    the payload is the ideal length plus a constant, whatever the tables, rare symbols too."""
    rng = np.random.default_rng(1)
    encoder, ideal, rows = TokenEncoder(), 0.0, []
    for step in range(40):
        counts = quantize(tables(50, vocab, concentration, seed=step))
        # half the symbols drawn from the table, half uniformly: many cost 20+ bits
        drawn = np.array([rng.choice(vocab, p=c / TOTAL) for c in counts])
        symbols = np.where(rng.random(50) < 0.5, drawn, rng.integers(0, vocab, 50))
        encoder.encode(symbols, counts)
        ideal += code_length(counts, symbols)
        rows.append((symbols, counts))
    payload = encoder.finish()
    assert ideal - CODER_SLACK_BITS <= 8 * len(payload) <= ideal + CODER_SLACK_BITS
    decoder = TokenDecoder(payload)
    for symbols, counts in rows:
        np.testing.assert_array_equal(decoder.decode(counts), symbols)
    decoder.finish()


def test_every_token_costs_at_least_the_floor():
    probs = np.zeros((1000, 4), np.float32)
    probs[:, 0] = 1.0
    encoder = TokenEncoder()
    for _ in range(10):
        encoder.encode(np.zeros(1000, np.int64), quantize(probs))
    bits = 8 * len(encoder.finish())
    assert bits >= 10_000 * MIN_TOKEN_BITS - CODER_SLACK_BITS


def test_decoder_errors_are_value_errors():
    counts = quantize(tables(4, 16, 1.0))
    encoder = TokenEncoder()
    encoder.encode(np.arange(4), counts)
    payload = encoder.finish()
    decoder = TokenDecoder(payload + bytes(8))  # extra words: decodes, then refuses
    np.testing.assert_array_equal(decoder.decode(counts), np.arange(4))
    with pytest.raises(ValueError, match="after its last token"):
        decoder.finish()
    with pytest.raises(ValueError, match="does not decode"):  # constriction's own assertion
        TokenDecoder(b"\xff" * 12).decode(counts)
