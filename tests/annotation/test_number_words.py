"""The template filters that put numbers into words (issue #24 item 10)."""

from __future__ import annotations

from annotation.templatetags.distill import confidence, duration, kappa_words, pct


def test_kappa_in_landis_and_koch_bands():
    assert kappa_words(0.9) == "almost perfect agreement"
    assert kappa_words(0.7) == "substantial agreement"
    assert kappa_words(0.5) == "moderate agreement"
    assert kappa_words(-0.1) == "no more agreement than chance"
    assert kappa_words(None) == kappa_words("") == "not measured yet"


def test_shares_durations_and_confidences_read_as_people_say_them():
    assert (pct(0.523), pct(0.5551, 1), pct(None), pct("")) == ("52 %", "55.5 %", "—", "—")
    assert (duration(17.4), duration(300), duration(3 * 3600 + 60), duration(None)) == (
        "17 s",
        "5 min",
        "3 h 1 min",
        "—",
    )
    badge = confidence(0.31, "student", "softmax")
    assert ">31 % sure<" in badge and "The student says it is 31 % sure" in badge
    assert "not how often it is right" in badge and confidence(None) == ""
