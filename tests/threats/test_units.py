"""One unit rule: eps in [0, 1] in Python (as in torchattacks), grey levels in YAML; a value
implausible for its unit is one loud error instead of a silent non-attack."""

from __future__ import annotations

import pytest

from entroguard.campaign.config import ConfigError, parse_config
from entroguard.threats.attacks import ClassifierPGD, RatePGD, SignNoise


@pytest.mark.parametrize("attack", [RatePGD, ClassifierPGD, SignNoise])
def test_grey_levels_in_python_are_a_loud_error(attack):
    with pytest.raises(ValueError, match=r"pass eps=8/255 \(= 0.0314\)"):
        attack(eps=8)
    assert attack(eps=8 / 255).eps == pytest.approx(0.0314, abs=1e-4)


def test_an_l2_radius_may_exceed_one():
    assert RatePGD(eps=2.0, norm="l2").eps == 2.0


def _attack_eps(eps):
    config = parse_config({"threats": ["clean", {"attack": "noise", "eps": eps}]})
    return [t.strength for g in config.threat_groups for t in g.threats if t.name == "noise"]


def test_yaml_budgets_are_grey_levels_or_explicit_fractions():
    assert _attack_eps([2, 8]) == [2.0, 8.0]
    assert _attack_eps(["8/255", "16 / 255"]) == [8.0, 16.0]


@pytest.mark.parametrize(("eps", "match"), [
    ([0.03], "below one grey level.*write 7.65"),
    ([300], "more than the whole 0-255 range"),
    (["8/256"], "expected non-negative numbers"),
    (["x/255"], "not a budget like '8/255'"),
])  # fmt: skip
def test_implausible_yaml_budgets_are_refused(eps, match):
    with pytest.raises(ConfigError, match=match):
        _attack_eps(eps)
