"""Where a campaign's results came from, and whether a rerun may add to them.

Every run of a campaign into a folder records its resolved configuration, the versions of
entroguard, torch, CompressAI and numpy, the seed, the git commit of the source (when it is a
checkout) and the machine. A rerun into the same folder resumes or extends the grid only when
the settings that decide every measurement (dataset, images, batch size, seed, defence
parameters) are the ones already measured with; otherwise results of two set-ups would mix
silently, so it is refused with one error saying what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from entroguard.campaign.config import CampaignConfig, ConfigError

IDENTITY_KEYS = ("dataset", "n_images", "batch_size", "seed", "defense_params")
PACKAGES = ("entroguard", "torch", "compressai", "numpy")


def identity(config: CampaignConfig) -> dict:
    """The settings every measurement of ``config`` depends on (not the grid's extent)."""
    return {k: getattr(config, k) for k in IDENTITY_KEYS}


def config_record(config: CampaignConfig) -> str:
    """The resolved configuration as canonical JSON."""
    return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _run(command: list[str], check: bool = False) -> str:
    return subprocess.run(command, text=True, capture_output=True, timeout=5,
                          check=check).stdout.strip()  # fmt: skip


def _commit() -> str | None:
    """The source checkout's commit (with ``-dirty`` for uncommitted changes), if any."""
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    try:
        head = _run([*git, "rev-parse", "HEAD"], check=True)
        dirty = _run([*git, "status", "--porcelain", "--", "."])
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """Versions, git commit and machine of this process."""
    return {
        "versions": {p: _version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "commit": _commit(),
        "machine": {"platform": platform.platform(), "cpu": _cpu_name(), "cpus": os.cpu_count()},
    }  # fmt: skip


def check_resume(previous: dict | None, current: dict, out_dir: Path) -> None:
    """:class:`ConfigError` when ``out_dir`` was measured with other identity settings."""
    if previous is None or previous == current:
        return
    changed = [k for k in IDENTITY_KEYS if previous.get(k) != current.get(k)]
    then = ", ".join(f"{k}={previous.get(k)!r}" for k in changed)
    now = ", ".join(f"{k}={current.get(k)!r}" for k in changed)
    raise ConfigError(
        f"{out_dir} was measured with {then}; this config has {now}. Results of two set-ups "
        f"would mix: give another --out to start a new run, or restore those values to resume "
        "or extend this one (new threats, defences, models and leak entries may be added)"
    )
