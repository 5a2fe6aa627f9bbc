"""Likeness scoring for the duplicate check before registering (app/domain/duplicates.py)."""
from __future__ import annotations

import pytest

from app.domain.duplicates import LIKELY_DUPLICATE_SCORE, likeness, normalise_name, normalise_phone

AMINA = {"given_name": "Amina", "family_name": "Odhiambo", "birth_date": "1990-03-04",
         "phone": "+254 712 345 678",
         "identifiers": [{"system": "national-id", "value": "12345678"}]}


def test_same_name_and_birth_date_is_a_likely_duplicate():
    score, reasons = likeness({"given_name": "Amina", "family_name": "Odhiambo",
                               "birth_date": "1990-03-04"}, AMINA)
    assert score == pytest.approx(0.8)
    assert reasons == ["similar name", "same date of birth"]
    assert score >= LIKELY_DUPLICATE_SCORE


def test_accents_case_and_punctuation_do_not_hide_a_name_match():
    score, reasons = likeness({"given_name": "AMÍNA", "family_name": "O'dhiambo"}, AMINA)
    assert reasons == ["similar name"]
    assert normalise_name("  José-María ") == "josemaria"


def test_small_spelling_difference_still_counts_as_similar_name():
    _, reasons = likeness({"given_name": "Aminah", "family_name": "Odhiambo"}, AMINA)
    assert reasons == ["similar name"]


def test_family_name_alone_is_weak_and_not_a_likely_duplicate():
    score, reasons = likeness({"given_name": "Brian", "family_name": "Odhiambo",
                               "birth_date": "1990-03-04"}, AMINA)
    assert reasons == ["same family name", "same date of birth"]
    assert score == pytest.approx(0.55)
    assert score < LIKELY_DUPLICATE_SCORE


def test_phone_compares_the_last_nine_digits_whatever_the_format():
    assert normalise_phone("+254 712 345 678") == normalise_phone("0712-345-678") == "712345678"
    score, reasons = likeness({"given_name": "Someone", "family_name": "Else",
                               "phone": "0712 345 678"}, AMINA)
    assert reasons == ["same phone number"] and score == pytest.approx(0.4)


def test_short_phone_numbers_are_ignored():
    other = {"given_name": "X", "family_name": "Y", "phone": "1234"}
    _, reasons = likeness({"given_name": "P", "family_name": "Q", "phone": "1234"}, other)
    assert reasons == []


def test_shared_identifier_is_decisive_and_matches_case_and_spaces_insensitively():
    score, reasons = likeness({"given_name": "Zed", "family_name": "Unrelated",
                               "identifiers": [{"system": "national-id", "value": " 12345678 "}]},
                              AMINA)
    assert score == 1.0 and reasons == ["same identifier"]


def test_identifier_value_under_another_system_does_not_count():
    _, reasons = likeness({"given_name": "Zed", "family_name": "Unrelated",
                           "identifiers": [{"system": "passport", "value": "12345678"}]}, AMINA)
    assert reasons == []


def test_score_is_capped_at_one():
    score, reasons = likeness(AMINA, AMINA)
    assert score == 1.0
    assert reasons == ["similar name", "same date of birth", "same phone number", "same identifier"]


def test_unrelated_people_score_zero():
    assert likeness({"given_name": "Peter", "family_name": "Kamau", "birth_date": "1975-01-01",
                     "phone": "0733 000 111"}, AMINA) == (0.0, [])


def test_missing_birth_dates_are_not_a_match():
    score, reasons = likeness({"given_name": "Peter", "family_name": "Kamau"},
                              {"given_name": "Paul", "family_name": "Otieno"})
    assert "same date of birth" not in reasons and score == 0.0
