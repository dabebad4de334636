"""What a stream may send while tokens come: cut at the first stop sequence (also one
that spans tokens, whose start is held back until it is known not to be one), and
everything held back sent at the end."""

from __future__ import annotations

import pytest

from worker.inference.text import StreamText
from worker.tiny_model import build_tokenizer

TEXT = "The capital of France is Paris."


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return build_tokenizer()


def sent(tokenizer, stop: list[str]) -> tuple[list[str], StreamText]:  # type: ignore[no-untyped-def]
    stream = StreamText(tokenizer, stop)
    pieces = [stream.add(token) for token in tokenizer(TEXT, add_special_tokens=False)["input_ids"]]
    if not stream.stopped:
        pieces.append(stream.rest())
    return pieces, stream


def test_a_stop_sequence_across_tokens_cuts_the_text_and_is_never_sent(tokenizer) -> None:  # type: ignore[no-untyped-def]
    pieces, stream = sent(tokenizer, ["ce is P"])
    assert stream.stopped and "".join(pieces) == "The capital of Fran"
    assert all("ce" not in piece for piece in pieces)


def test_without_a_stop_everything_is_sent_in_pieces(tokenizer) -> None:  # type: ignore[no-untyped-def]
    pieces, stream = sent(tokenizer, ["Lyon", "is Rome"])
    assert not stream.stopped and "".join(pieces) == TEXT
    assert len([piece for piece in pieces if piece]) > 3
