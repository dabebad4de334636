"""Exact match and token F1 (core.answer_metrics): SQuAD's definitions, and the
normalization of Persian, Arabic and scripts written without spaces."""

from __future__ import annotations

import pytest

from core.answer_metrics import answer_tokens, exact_match, normalize_answer, token_f1


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("The Eiffel Tower.", "eiffel tower"),  # case, article, punctuation
        ("  Paris ,  France ", "Paris France"),  # whitespace
        ("an apple", "Apple!"),
        ("ＰＡＲＩＳ", "paris"),  # full-width letters (NFKC)
        ("STRASSE", "straße"),  # case folding
    ],
)
def test_squad_normalization_makes_these_equal(prediction: str, reference: str) -> None:
    assert exact_match(prediction, reference) == 1.0
    assert token_f1(prediction, reference) == 1.0


def test_f1_counts_shared_tokens_with_their_multiplicity() -> None:
    # SQuAD's arithmetic: 2 shared of 3 predicted and 4 expected tokens.
    assert token_f1("cat sat mat", "the cat sat on a rug") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert token_f1("cat cat cat", "cat") == pytest.approx(0.5)  # precision 1/3, recall 1
    assert token_f1("dog", "cat") == 0.0
    assert exact_match("cat sat", "sat cat") == 0.0 and token_f1("cat sat", "sat cat") == 1.0


def test_answers_without_tokens() -> None:
    assert token_f1("", "") == 1.0 and exact_match("", "") == 1.0
    assert token_f1("the", "") == 1.0  # an article alone normalizes to nothing, as in SQuAD
    assert token_f1("", "Paris") == 0.0 and token_f1("Paris", "!!") == 0.0


def test_arabic_yeh_and_kaf_are_persian_yeh_and_kaf() -> None:
    assert exact_match("كتاب علي", "کتاب علی") == 1.0  # Arabic kaf and yeh typed on an Arabic keyboard
    assert exact_match("مصطفى", "مصطفی") == 1.0  # alef maksura


def test_persian_and_arabic_indic_digits_are_ascii_digits() -> None:
    assert normalize_answer("۱۴۰۳") == "1403"
    assert exact_match("٢٥ درجه", "25 درجه") == 1.0
    assert exact_match("سال ۱۳۵۷", "سال 1357") == 1.0


def test_zwnj_separates_words() -> None:
    assert exact_match("می‌خواهم", "می خواهم") == 1.0
    assert answer_tokens("کتاب‌ها") == ["کتاب", "ها"]
    assert token_f1("کتاب‌ها", "کتاب") == pytest.approx(2 / 3)  # partial credit for the stem


def test_arabic_diacritics_and_tatweel_are_removed() -> None:
    assert exact_match("كِتَابٌ", "کتاب") == 1.0
    assert exact_match("مُحَمَّد", "محمد") == 1.0  # shadda
    assert exact_match("تهـــران", "تهران") == 1.0  # tatweel


def test_persian_punctuation_is_removed() -> None:
    assert exact_match("«تهران»؟", "تهران") == 1.0
    assert exact_match("شیراز، اصفهان؛ تبریز.", "شیراز اصفهان تبریز") == 1.0


def test_english_articles_are_removed_only_from_latin_text() -> None:
    assert answer_tokens("The answer") == ["answer"]
    assert answer_tokens("ویتامین a") == ["ویتامین", "a"]  # a Persian answer that names vitamin A
    assert exact_match("ویتامین a", "ویتامین") == 0.0


def test_scripts_without_spaces_are_compared_character_by_character() -> None:
    assert answer_tokens("東京都") == ["東", "京", "都"]
    assert token_f1("東京", "東京都") == pytest.approx(0.8)  # 2 of 2 predicted, 2 of 3 expected
    assert answer_tokens("东京 Tower") == ["东", "京", "tower"]
    assert answer_tokens("กรุงเทพ")[:2] == ["ก", "ร"]  # Thai
    assert answer_tokens("カタカナ。") == ["カ", "タ", "カ", "ナ"]  # the ideographic full stop is punctuation


def test_a_persian_answer_against_the_reference_of_the_example_dataset() -> None:
    reference = "تهران"
    assert exact_match("تهران.", reference) == 1.0
    assert exact_match("پایتخت ایران تهران است", reference) == 0.0
    assert token_f1("پایتخت ایران تهران است", reference) == pytest.approx(2 * (1 / 4) * 1 / (1 / 4 + 1))
