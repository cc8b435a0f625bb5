"""Campaign ``models`` keywords: the default zoo, BottleFit's models, or every shipped model."""

from __future__ import annotations

import pytest

from entroguard.campaign.config import ConfigError, parse_config
from entroguard.campaign.models import resolve_models
from entroguard.train.zoo import list_zoo

THREATS = ["clean"]


@pytest.mark.parametrize("keyword", ["zoo", "zoo:bottlefit", "zoo:slimmable", "zoo:all"])
def test_keywords_are_valid_configs(keyword):
    assert parse_config({"models": keyword, "threats": THREATS}).models == keyword


def test_a_list_of_names_is_still_a_valid_config():
    models = ["resnet_s-fp-beta0.01", "runs/x/model.safetensors"]
    assert parse_config({"models": models, "threats": THREATS}).models == models


def test_an_unknown_keyword_names_the_valid_ones():
    with pytest.raises(
        ConfigError, match="zoo, zoo:bottlefit, zoo:slimmable, zoo:rate_adversarial, zoo:all"
    ):
        parse_config({"models": "zoo:everything", "threats": THREATS})


def test_zoo_is_the_entropic_students_and_all_is_everything():
    rows = list_zoo()
    students = {r["name"] for r in rows if r["recipe"] == "entropic_student"}
    assert {m.name for m in resolve_models("zoo")} == students and len(students) == 24
    assert {m.name for m in resolve_models("zoo:all")} == {r["name"] for r in rows}
    bottlefit = {r["name"] for r in rows if r["recipe"] == "bottlefit"}
    assert len(bottlefit) >= 9  # three archs x three q8 widths, at least
    assert {m.name for m in resolve_models("zoo:bottlefit")} == bottlefit
    slim = [r["name"] for r in rows if r["recipe"] == "slimmable"]
    assert slim, "the slimmable heads are shipped"
    refs = resolve_models("zoo:slimmable")
    assert len(refs) == 16 * len(slim) and {ref.name.split("@")[0] for ref in refs} == set(slim)
