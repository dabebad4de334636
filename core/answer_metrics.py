"""Exact match and token F1 of an answer against a reference, as SQuAD defines them
(its official evaluation script: both texts normalized, exact match of the normalized
texts, F1 over their bags of tokens), with a normalization that works beyond English:

- Unicode NFKC (full-width forms, ligatures and presentation forms to their letters),
  then case folding;
- Arabic-script spelling variants made one: Arabic yeh and alef maksura (ي ى) to
  Persian yeh (ی), Arabic kaf (ك) to Persian kaf (ک), diacritics (harakat, tanwin,
  shadda, sukun, superscript alef, Quranic marks) and the tatweel removed;
- Persian (۰-۹) and Arabic-Indic (٠-٩) digits to ASCII digits;
- the zero-width non-joiner (ZWNJ, which Persian writes inside words: می‌خواهم) a
  space, so that "می‌خواهم" and "می خواهم" are the same answer;
- punctuation and symbols removed by Unicode category (P*, S*: SQuAD's ASCII
  punctuation, and also ، ؛ ؟ « » 。 、 ...);
- English articles (a, an, the) removed only from Latin-script text;
- tokens: whitespace-separated words, except in scripts written without spaces (Chinese,
  Japanese, Thai, Lao, Khmer, Myanmar, Tibetan), where each character is a token.

No torch here: the unit tests and any process can use it."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Harakat, tanwin, shadda, sukun and the like; the superscript alef; Quranic annotation marks.
_ARABIC_DIACRITICS = [*range(0x064B, 0x0660), 0x0670, *range(0x06D6, 0x06DD), *range(0x06DF, 0x06E9), 0x06EA]
_ARABIC_DIACRITICS += [0x06EB, 0x06EC, 0x06ED]
_TATWEEL, _ZWNJ = 0x0640, 0x200C
_CHARACTERS: dict[int, str | None] = {
    **dict.fromkeys(_ARABIC_DIACRITICS),
    _TATWEEL: None,
    _ZWNJ: " ",
    ord("ي"): "ی",  # Arabic yeh
    ord("ى"): "ی",  # alef maksura
    ord("ك"): "ک",  # Arabic kaf
    **{0x06F0 + d: str(d) for d in range(10)},  # Persian digits
    **{0x0660 + d: str(d) for d in range(10)},  # Arabic-Indic digits
}
_ARTICLES = frozenset({"a", "an", "the"})
# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer,
# Hiragana and Katakana, the CJK ideographs (and their extensions and compatibility forms).
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003134f]"
)


def _is_latin_text(text: str) -> bool:
    """Whether most of the letters of `text` are Latin (articles are English words)."""
    letters = [c for c in text if c.isalpha()]
    latin = sum(unicodedata.name(c, "").startswith("LATIN") for c in letters)
    return bool(letters) and latin * 2 > len(letters)


def _without_punctuation(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c)[0] not in "PS")


def answer_tokens(text: str) -> list[str]:
    """The normalized tokens of an answer (what both metrics compare)."""
    text = unicodedata.normalize("NFKC", text).translate(_CHARACTERS).casefold()
    text = _without_punctuation(text)
    tokens: list[str] = []
    for word in text.split():
        run = ""
        for char in word:
            if _UNSPACED.match(char):
                tokens.extend([run, char] if run else [char])
                run = ""
            else:
                run += char
        if run:
            tokens.append(run)
    if _is_latin_text(text):
        tokens = [t for t in tokens if t not in _ARTICLES]
    return tokens


def normalize_answer(text: str) -> str:
    """The normalized answer as text: its tokens, one space apart."""
    return " ".join(answer_tokens(text))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both normalize to the same tokens, else 0.0."""
    return float(answer_tokens(prediction) == answer_tokens(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's F1: the harmonic mean of the precision and recall of the prediction's
    tokens (counted with their multiplicity) against the reference's; when either has no
    token, 1.0 if both have none, else 0.0."""
    predicted, expected = answer_tokens(prediction), answer_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)
