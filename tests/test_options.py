"""Option schemas (seqvq.options): a Section takes the keys and types of what reads them."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from seqvq import UserError
from seqvq.options import Section


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
