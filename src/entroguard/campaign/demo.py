"""The demo campaign: the default zoo under all 19 corruptions x 5 severities and the attacks;
every defence on clean and rate-attacked inputs; the adaptive attacks behind object_tv; light
slices of BottleFit's fixed-rate bottleneck, of a slimmable head, of the rate-adversarially
trained models behind object_tv and of what the packets leak (their full grids are the
campaigns in ``examples/``); where splitting pays off for one model."""

from __future__ import annotations

from pathlib import Path

from entroguard.campaign.config import CampaignConfig, parse_config
from entroguard.defenses import OBJECT_TV_DEPLOYED

#: The defences: the paper's object-aware TV and the baselines (each at its defaults).
DEMO_DEFENSES = ["none", {"object_tv": OBJECT_TV_DEPLOYED}, "tv", "lowpass", "jpeg",
                 "gaussian_blur"]  # fmt: skip

#: The model whose rate maps, DCT bands and threat bands the report's analysis section shows.
ANALYSIS_MODEL = "resnet_s-mshp-beta0.01"

#: The models the adaptive attacks run on (the most costly attacks: one model per arch/prior).
ADAPTIVE_MODELS = ["*-fp-beta0.01", "*-mshp-beta0.01"]

#: Stands for the default zoo's entropic students in :data:`DEMO` (the full grid runs on
#: them): :func:`demo_config` puts their names in its place, read from the zoo's recipes, so
#: neither a rate-adversarial copy nor a BottleFit model of the same prior slips in.
ENTROPIC = "entropic students"

#: The slices (shipped ones only): a q8 BottleFit model, clean, under the 19 corruptions at
#: severity 3 and under rate_pgd; a slimmable head at its smallest and largest settings, clean
#: and under rate_pgd (kept light: the demo's time budget).
BOTTLEFIT_SLICE = ["resnet_s-q8-c2-bottlefit"]
SLICE_MODELS = [*BOTTLEFIT_SLICE, "resnet_s-slim-mshp@m1,r0", "resnet_s-slim-mshp@m4,r3"]

#: The best way of winning the bytes back (docs/defences.md): rate-adversarially fine-tuned
#: models behind object_tv, under rate_pgd and under rate_pgd_through, on resnet_s (their full
#: grid is examples/winning_bytes.yaml).
RADV_SLICE = ["resnet_s-fp-beta0.01-radv", "resnet_s-mshp-beta0.01-radv"]

#: The leak slice: what the packets of the analysis model give away to a linear probe, from
#: the latent that travels and from the logits, unprotected and under keyed noise, with the
#: side channels (the full zoo-wide measurement is examples/leak.yaml).
LEAK_SLICE = {"protections": ["none", "keyed_noise"], "points": ["latent", "logits"],
              "probes": ["linear"], "shadow_images": 2000, "models": [ANALYSIS_MODEL]}  # fmt: skip

#: Test images the plan times (medians).
PLAN_IMAGES = 50

DEMO = {
    "dataset": "fashion-mnist",
    "n_images": 64,
    "batch_size": 64,
    "seed": 0,
    "models": "zoo",
    "defenses": DEMO_DEFENSES,
    "threats": [
        "clean",  # behind every defence: what each costs when nobody attacks
        {
            "corruption": "all",
            "severities": [1, 2, 3, 4, 5],
            "defenses": ["none"],
            "models": ENTROPIC,
        },
        {"attack": "noise", "eps": [2, 4, 8, 16, 32], "defenses": ["none"], "models": ENTROPIC},
        {
            "attack": "rate_pgd",
            "eps": [2, 4, 16, 32],
            "n_images": 32,
            "defenses": ["none"],
            "models": ENTROPIC,
        },
        {"attack": "rate_pgd", "eps": [8], "n_images": 32, "models": ENTROPIC},  # every defence
        {
            "attack": "clf_pgd",
            "eps": [2, 4, 8, 16, 32],
            "n_images": 32,
            "defenses": ["none"],
            "models": ENTROPIC,
        },
        # the slices of the newer systems
        {"corruption": "all", "severities": [3], "defenses": ["none"], "models": BOTTLEFIT_SLICE},
        {
            "attack": "rate_pgd",
            "eps": [8, 32],
            "n_images": 32,
            "defenses": ["none"],
            "models": SLICE_MODELS,
        },
        {
            "attack": "rate_pgd",
            "eps": [8],
            "n_images": 32,
            "defenses": ["none", "object_tv"],
            "models": RADV_SLICE,
        },
        {"attack": "rate_pgd_through", "eps": [8], "n_images": 32, "models": RADV_SLICE},
        # adaptive attacks, each measured behind object_tv (the defence they adapt to)
        {"attack": "rate_lowfreq", "eps": [8], "n_images": 32, "models": ADAPTIVE_MODELS},
        {"attack": "rate_region", "eps": [8], "n_images": 32, "models": ADAPTIVE_MODELS},
        {"attack": "rate_pgd_through", "eps": [8], "n_images": 32, "models": ADAPTIVE_MODELS},
    ],
    "leak": [LEAK_SLICE],
}


def demo_config(n_images: int | None = None, zoo_dir: str | Path | None = None) -> CampaignConfig:
    """The demo grid (``n_images`` overrides the number of test images): the entropic zoo of
    ``zoo_dir`` (default: the shipped one) and the slice models it holds."""
    from entroguard.models.slimmable import split_setting_name
    from entroguard.train.zoo import list_zoo

    rows = list_zoo(zoo_dir)
    shipped = {row["name"] for row in rows}
    entropic = [row["name"] for row in rows if row["recipe"] == "entropic_student"]
    slices = [m for m in SLICE_MODELS + RADV_SLICE if split_setting_name(m)[0] in shipped]
    threats = [_scoped(entry, entropic) for entry in DEMO["threats"]]
    cfg = parse_config(DEMO | {"models": entropic + slices, "threats": threats}, "demo")
    if n_images is not None:
        cfg.n_images = n_images
    return cfg


def _scoped(entry: str | dict, entropic: list[str]) -> str | dict:
    """``entry`` with :data:`ENTROPIC` replaced by the entropic students' names."""
    if isinstance(entry, dict) and entry.get("models") == ENTROPIC:
        return entry | {"models": entropic}
    return entry


def write_demo_plan(out: str | Path, zoo_dir: str | Path | None = None) -> Path:
    """Where splitting pays off for :data:`ANALYSIS_MODEL`, into ``out/plan`` (the report's
    section), timed on :data:`PLAN_IMAGES` test images with the default parameters."""
    from entroguard.campaign.models import resolve_models
    from entroguard.data import load_dataset
    from entroguard.plan.costs import PlanParameters
    from entroguard.plan.record import plan_record, write_plan
    from entroguard.plan.timing import measure_costs

    ref = resolve_models([ANALYSIS_MODEL], zoo_dir)[0]
    images = load_dataset("fashion-mnist", "test").to_float(slice(0, PLAN_IMAGES))
    costs = measure_costs(ref.load(), images)
    return write_plan(Path(out) / "plan", plan_record(ref.name, costs, PlanParameters()))


def print_summary(out: str | Path) -> None:
    """Print the clean table (accuracy and the three sizes per model, without defence)."""
    import typer

    from entroguard.campaign.export import condition_rows
    from entroguard.campaign.store import ResultStore
    from entroguard.report.table import format_table

    with ResultStore(Path(out) / "results.sqlite") as store:
        rows = [r for r in condition_rows(store)
                if r["threat"] == "clean" and r["defense"] == "none"]  # fmt: skip
    typer.echo(format_table(rows, ["model", "n", "top1", "est_bytes", "payload_bytes",
                                   "packet_bytes"]))  # fmt: skip


def write_demo_analysis(out: str | Path, n_images: int, zoo_dir: str | Path | None = None,
                        device: str = "cpu") -> Path:  # fmt: skip
    """Where the bits go, for the report: :func:`~entroguard.analysis.run.write_analysis` on
    :data:`ANALYSIS_MODEL` (from ``zoo_dir`` when given) into ``out/analysis``, on ``device``;
    skipped when a previous run already wrote it for as many images."""
    import json

    from entroguard.analysis.run import ANALYSIS_JSON, write_analysis

    folder = Path(out) / "analysis"
    done = folder / ANALYSIS_JSON
    if done.is_file() and json.loads(done.read_text()).get("n") == n_images:
        return done
    model = ANALYSIS_MODEL
    if zoo_dir is not None:
        model = str(Path(zoo_dir) / f"{ANALYSIS_MODEL}.safetensors")
    return write_analysis(model, folder, n_images=n_images, device=device)
