"""Option schemas (seqvq.options): a Section takes the keys and types of what reads them."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from seqvq import UserError
from seqvq.options import Section, options_from


def test_a_section_takes_the_keys_and_types_of_what_reads_it():
    def remedy(dim: int, steps: int = 3, scale: float = 1.0, mode: str = "a", names: list[str] | None = None):
        return None

    def layer(dim: int, size: int, *, remedy: dict | None = None, flag: bool = False, **rest):
        return None

    section = Section.of(layer, skip=("dim",), remedy=Section.of(remedy, skip=("dim",)))
    assert set(section.fields) == {"size", "remedy", "flag"} and section.open  # **rest: other keys pass
    checked = section.check({"size": 2.0, "remedy": {"scale": "1e-3", "steps": 4, "names": ["x"]}, "other": 1})
    assert checked == {"size": 2, "remedy": {"scale": 0.001, "steps": 4, "names": ["x"]}, "other": 1}
    assert section.check({"remedy": None}) == {"remedy": None}
    for values, message in [({"remedy": {"step": 1}}, "m.remedy.step: unknown key; did you mean 'm.remedy.steps'?"),
                            ({"remedy": {"dim": 1}}, "m.remedy.dim: unknown key; m.remedy takes mode, names, scale"),
                            ({"size": 2.5}, "m.size: expected an integer, got float 2.5"),
                            ({"flag": "yes"}, "m.flag: expected true/false, got str 'yes'"),
                            ({"remedy": {"names": [1]}}, "m.remedy.names: expected a list or null, got list"),
                            ({"remedy": "on"}, "m.remedy: expected a mapping or null, got str 'on'")]:
        with pytest.raises(UserError, match=re.escape(message)):
            section.check(values, "m")


def test_required_keys_of_a_dataclass_section():
    @dataclass
    class Data:
        train: str
        dev: str | None = None

    section = Section.of(Data)
    assert section.check({"dev": None}, "data", complete=False) == {"dev": None}
    with pytest.raises(UserError, match=re.escape("data.train: missing; set it in the config or as an override")):
        section.check({"dev": "x"}, "data")


@dataclass(frozen=True)
class Anneal:
    start: float
    end: float
    steps: int = 10


def test_a_field_typed_with_an_options_dataclass_is_a_nested_section():
    def layer(dim: int, *, anneal: float | Anneal | dict = 1.0, other: Anneal | None = None):
        return None

    section = Section.of(layer, skip=("dim",))
    assert set(section.sections) == {"anneal", "other"}
    assert section.check({"anneal": 0.5}) == {"anneal": 0.5}
    assert section.check({"anneal": {"start": "1e-1", "end": 1}}, "m") == {"anneal": {"start": 0.1, "end": 1.0}}
    assert section.check({"other": {"start": 1}}, "m", complete=False) == {"other": {"start": 1.0}}
    for values, message in [({"anneal": {"start": 1, "edn": 2}}, "m.anneal.edn: unknown key; did you mean "
                                                                 "'m.anneal.end'?"),
                            ({"anneal": {"start": 1}}, "m.anneal.end: missing"),
                            ({"anneal": "hot"}, "m.anneal: expected a number or a mapping, got str 'hot'"),
                            ({"other": 3}, "m.other: expected a mapping or null, got int 3")]:
        with pytest.raises(UserError, match=re.escape(message)):
            section.check(values, "m")


def test_options_from_a_mapping_equal_the_dataclass():
    assert options_from(Anneal, {"start": 1.0, "end": 0.5}, "anneal") == Anneal(1.0, 0.5)
    given = Anneal(2.0, 1.0, 3)
    assert options_from(Anneal, given, "anneal") is given
    assert options_from(Anneal, None, "anneal") is None
    with pytest.raises(ValueError, match="anneal needs 'start'"):  # an empty mapping is the method with its
        options_from(Anneal, {}, "anneal")                           # defaults, and Anneal has required fields


@pytest.mark.parametrize("value, message", [
    ({"start": 1.0, "end": 0.5, "step": 3}, "anneal takes 'start', 'end' and 'steps'; got ['step']"),
    ({"start": 1.0}, "anneal needs 'end'; got {'start': 1.0}"),
    (0.5, "anneal takes a mapping of 'start', 'end' and 'steps' (or Anneal); got float 0.5"),
])
def test_options_from_refuses_what_the_dataclass_does_not_take(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        options_from(Anneal, value, "anneal")
