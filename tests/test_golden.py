"""Bitstream checksums: a change in the bytes any model writes must be seen.

Regenerate after an intended change with ``ENTROGUARD_REGEN_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from eg_testutil import PRIORS, SMALL_ARCHS, seeded_images, seeded_model

GOLDEN = Path(__file__).parent / "golden" / "bitstreams.json"
REGEN = os.environ.get("ENTROGUARD_REGEN_GOLDEN") == "1"


def _digest(packets: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in packets:
        h.update(len(p).to_bytes(4, "big") + p)
    return h.hexdigest()


def _load() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


def _check(key: str, packets: list[bytes]) -> None:
    golden = _load()
    digest = {"sha256": _digest(packets), "bytes": [len(p) for p in packets]}
    if REGEN:
        golden[key] = digest
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    assert key in golden, f"no golden entry {key!r}: run with ENTROGUARD_REGEN_GOLDEN=1"
    assert digest == golden[key], f"bitstream of {key} changed"


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_seeded_model_bitstream_is_stable(arch, prior):
    model = seeded_model(arch, prior)
    packets = model.to_packets(seeded_images(3, seed=11))
    assert packets == model.to_packets(seeded_images(3, seed=11))  # run to run, same process
    _check(f"seeded/{arch}-{prior}", packets)


def test_zoo_bitstreams_are_stable():
    from entroguard.data import load_dataset
    from entroguard.train.checkpoint import load_checkpoint
    from entroguard.train.zoo import list_zoo

    rows = list_zoo()
    if not rows:
        pytest.fail("the shipped zoo is empty: train it with `entroguard train --zoo`")
    images = load_dataset("fashion-mnist", "test").to_float(slice(0, 4))
    for row in rows:
        model = load_checkpoint(row["path"])
        _check(f"zoo/{row['name']}", model.to_packets(images))
