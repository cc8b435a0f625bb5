"""The demo campaign: the default zoo, clean, all 19 corruptions x 5 severities, the attacks."""

from __future__ import annotations

from pathlib import Path

from entroguard.campaign.config import CampaignConfig, parse_config

DEMO = {
    "dataset": "fashion-mnist",
    "n_images": 64,
    "batch_size": 64,
    "seed": 0,
    "models": "zoo",
    "threats": [
        "clean",
        {"corruption": "all", "severities": [1, 2, 3, 4, 5]},
        {"attack": "noise", "eps": [2, 4, 8, 16, 32]},
        {"attack": "rate_pgd", "eps": [2, 4, 8, 16, 32], "n_images": 32},
        {"attack": "clf_pgd", "eps": [2, 4, 8, 16, 32], "n_images": 32},
    ],
}


def demo_config(n_images: int | None = None) -> CampaignConfig:
    """The demo grid (``n_images`` overrides the number of test images)."""
    cfg = parse_config(DEMO, "demo")
    if n_images is not None:
        cfg.n_images = n_images
    return cfg


def print_summary(out: str | Path) -> None:
    """Print the clean table (accuracy and the three sizes per model)."""
    import typer

    from entroguard.campaign.export import condition_rows
    from entroguard.campaign.store import ResultStore
    from entroguard.report.table import format_table

    with ResultStore(Path(out) / "results.sqlite") as store:
        rows = [r for r in condition_rows(store) if r["threat"] == "clean"]
    typer.echo(format_table(rows, ["model", "n", "top1", "est_bytes", "payload_bytes",
                                   "packet_bytes"]))  # fmt: skip
