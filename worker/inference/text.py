"""The text of generated tokens as it may be sent while they come: decoded from all the
tokens so far (a character can take several tokens), cut at the first stop sequence,
and holding back an end that may be the start of one (or half a character)."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"  # what decoding shows for the first bytes of an unfinished character


class StreamText:
    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0  # characters sent so far
        self.stopped = False  # a stop sequence came: nothing more is sent

    def _text(self) -> str:
        return str(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _held(self, text: str) -> int:
        """How many characters at the end of `text` may begin a stop sequence."""
        longest = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return max(longest, 1 if text.endswith(REPLACEMENT) else 0)

    def add(self, token_id: int) -> str:
        """The text that `token_id` makes sendable ("" if none)."""
        self.ids.append(token_id)
        text = self._text()
        found = [i for i in (text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0]
        if found:
            self.stopped = True
            return self._take(text, min(found))
        return self._take(text, len(text) - self._held(text))

    def rest(self) -> str:
        """At the end (EOS, length): whatever was held back."""
        return "" if self.stopped else self._take(self._text(), None)

    def _take(self, text: str, end: int | None) -> str:
        end = len(text) if end is None else end
        chunk = text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return chunk
