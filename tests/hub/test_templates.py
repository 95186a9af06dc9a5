"""Template rendering is plain ``{name}`` substitution, never Python formatting."""

from __future__ import annotations

import pytest

from hub.errors import InvalidInput
from hub.templates import pick_locale, placeholders, render


def test_plain_names_are_filled_with_text():
    assert render("Hi {name}, {n} new", {"name": "<b>Ann</b>", "n": 3}) == "Hi <b>Ann</b>, 3 new"


def test_literal_braces_survive():
    assert render("{{not a var}} {x}", {"x": 1}) == "{not a var} 1"


def test_non_string_values_render_as_json_text():
    assert render("{a} {b} {c}", {"a": None, "b": True, "c": [1, 2]}) == " true [1,2]"


def test_missing_variable_is_invalid_input():
    with pytest.raises(InvalidInput) as info:
        render("Hi {name}", {})
    assert "name" in info.value.detail


@pytest.mark.parametrize(
    "template",
    ["{name.__class__}", "{name.__class__.__mro__}", "{0}", "{data[0]}", "{name!r}",
     "{name:>100000}", "{}"],
)
def test_attribute_index_conversion_and_format_spec_are_refused(template):
    with pytest.raises(InvalidInput):
        placeholders(template)
    with pytest.raises(InvalidInput):
        render(template, {"name": "x", "data": ["secret"], "0": "y"})


def test_unbalanced_braces_are_invalid_input():
    with pytest.raises(InvalidInput):
        placeholders("oops {")


@pytest.mark.parametrize(("locale", "picked"), [
    ("de", "de"),
    ("DE-at", "de"),              # a region falls back to its language
    ("zh-Hant-TW", "zh-Hant"),    # subtags dropped one at a time
    ("pt-br", "pt-BR"),           # case-insensitive, the stored spelling returned
    ("fr", None),                 # no variant: the template's own text
    (None, None),
    ("", None),
])
def test_pick_locale_takes_the_longest_matching_prefix_of_the_tag(locale, picked):
    variants = {"de": {}, "zh-Hant": {}, "zh": {}, "pt-BR": {}}
    assert pick_locale(variants, locale) == picked


def test_pick_locale_without_variants_is_the_default():
    assert pick_locale({}, "de") is None
