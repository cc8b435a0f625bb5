"""Campaign entries scoped to defences and models, defence parameters from the config, and
parallel workers that measure exactly what one process measures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from entroguard.campaign import ConfigError, run_campaign
from entroguard.campaign.config import parse_config

SCOPED = {
    "n_images": 8,
    "batch_size": 4,
    "models": "zoo",
    "defenses": ["none", {"lowpass": {"fraction": 0.5}}, "jpeg"],
    "threats": [
        "clean",
        {"corruption": ["gaussian_noise"], "severities": [3], "defenses": ["none"]},
        {
            "attack": "rate_pgd",
            "eps": [8],
            "n_images": 4,
            "params": {"steps": 2, "noise_copies": 2},
            "defenses": ["none", "lowpass"],
            "models": ["resnet_s-*"],
        },
        {
            "attack": "rate_pgd_through",
            "eps": [8],
            "n_images": 4,
            "params": {"steps": 2, "noise_copies": 2, "defense": "lowpass"},
            "models": ["regnet_s-mshp-beta0.01"],
        },
    ],
}


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_entries_measure_only_their_defences_and_models(tiny_zoo, tmp_path):
    rows = _rows(run_campaign(parse_config(SCOPED), tmp_path, zoo_dir=tiny_zoo, progress=False))
    keys = {(r["model"], r["threat"], r["defense"]) for r in rows}
    fp, mshp = "resnet_s-fp-beta0.01", "regnet_s-mshp-beta0.01"
    expected = {(m, "clean", d) for m in (fp, mshp) for d in ("none", "lowpass", "jpeg")}
    expected |= {(m, "corruption/gaussian_noise", "none") for m in (fp, mshp)}
    expected |= {(fp, "rate_pgd", "none"), (fp, "rate_pgd", "lowpass")}
    expected |= {(mshp, "rate_pgd_through", "lowpass")}
    assert keys == expected
    assert len(rows) == len(expected)


def test_defence_parameters_reach_the_defence_and_the_adaptive_attack(tiny_zoo, tmp_path):
    rows = _rows(run_campaign(parse_config(SCOPED), tmp_path, zoo_dir=tiny_zoo, progress=False))
    by_key = {(r["model"], r["threat"], r["defense"]): r for r in rows}
    lowpass_clean = json.loads(by_key["resnet_s-fp-beta0.01", "clean", "lowpass"]["params"])
    assert lowpass_clean == {"defense_params": {"fraction": 0.5}}
    assert json.loads(by_key["resnet_s-fp-beta0.01", "clean", "jpeg"]["params"]) == {}
    through = json.loads(by_key["regnet_s-mshp-beta0.01", "rate_pgd_through", "lowpass"]["params"])
    assert through["defense_params"] == {"fraction": 0.5}


def test_a_different_defence_parameter_changes_the_measurement(tiny_zoo, tmp_path):
    base = {**SCOPED, "threats": ["clean"], "models": ["regnet_s-mshp-beta0.01"]}
    narrow = {**base, "defenses": [{"lowpass": {"fraction": 0.05}}]}
    wide = {**base, "defenses": [{"lowpass": {"fraction": 0.9}}]}
    a = _rows(run_campaign(parse_config(narrow), tmp_path / "a", zoo_dir=tiny_zoo, progress=False))
    b = _rows(run_campaign(parse_config(wide), tmp_path / "b", zoo_dir=tiny_zoo, progress=False))

    def payload(rows: list[dict]) -> float:
        return next(float(r["payload_bytes"]) for r in rows if r["defense"] == "lowpass")

    assert payload(a) < payload(b)


def test_parallel_workers_measure_what_one_process_measures(tiny_zoo, tmp_path):
    cfg = parse_config(SCOPED)
    one = run_campaign(cfg, tmp_path / "one", zoo_dir=tiny_zoo, progress=False, workers=1)
    two = run_campaign(cfg, tmp_path / "two", zoo_dir=tiny_zoo, progress=False, workers=2)

    def drop(rows: list[dict]) -> list[dict]:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
        return sorted(rows, key=lambda r: (r["model"], r["threat"], r["strength"], r["defense"]))

    assert drop(_rows(one)) == drop(_rows(two))


@pytest.mark.parametrize(
    "raw, key",
    [
        (
            {"defenses": ["jpeg"], "threats": [{"corruption": ["fog"], "defenses": ["tv"]}]},
            "threats[0].defenses",
        ),
        ({"defenses": [{"lowpass": {"fraction": 2}}], "threats": ["clean"]}, "defenses[0].lowpass"),
        ({"defenses": [{"jpeg": {"qualty": 5}}], "threats": ["clean"]}, "defenses[0].jpeg"),
        ({"defenses": ["jpeg", "jpeg"], "threats": ["clean"]}, "defenses[1]"),
        (
            {"threats": [{"attack": "rate_lowfreq", "defenses": ["none"]}]},
            "threats[0].defenses",
        ),
        ({"threats": [{"attack": "noise", "models": "resnet"}]}, "threats[0].models"),
    ],
)
def test_scope_errors_name_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(key), str(info.value)


def test_a_model_pattern_that_matches_nothing_is_a_clear_error(tiny_zoo, tmp_path):
    raw = {"n_images": 4, "threats": [{"attack": "noise", "eps": [8], "models": ["vit-*"]}]}
    with pytest.raises(ConfigError, match=r"threats\[0\]\.models: no model .* matches"):
        run_campaign(parse_config(raw), tmp_path, zoo_dir=tiny_zoo, progress=False)


def test_the_shipped_example_configs_parse_and_deploy_the_demo_object_tv():
    from entroguard.campaign import load_config
    from entroguard.defenses import OBJECT_TV_DEPLOYED

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        cfg = load_config(path)
        if "object_tv" in cfg.defenses:
            assert cfg.defense_params["object_tv"] == OBJECT_TV_DEPLOYED, path.name


def test_a_rerun_with_other_settings_is_refused_and_a_larger_grid_extends(tiny_zoo, tmp_path):
    from entroguard.campaign.store import ResultStore

    base = {"n_images": 4, "batch_size": 4, "models": "zoo", "threats": ["clean"]}
    run_campaign(parse_config(base), tmp_path, zoo_dir=tiny_zoo, progress=False)
    with pytest.raises(ConfigError, match=r"n_images=4; this config has n_images=8\. .*--out"):
        run_campaign(parse_config(base | {"n_images": 8}), tmp_path, zoo_dir=tiny_zoo,
                     progress=False)  # fmt: skip
    wider = base | {"threats": ["clean", {"corruption": ["fog"], "severities": [1]}]}
    run_campaign(parse_config(wider), tmp_path, zoo_dir=tiny_zoo, progress=False)
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert {c["threat"] for c in store.conditions()} == {"clean", "corruption/fog"}
        runs = store.runs()
    assert len(runs) == 2 and runs[0]["identity"]["n_images"] == 4
    assert runs[1]["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0]
    assert "corruption/fog" not in runs[0]["config"] and "fog" in runs[1]["config"]
