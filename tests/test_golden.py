"""Golden packets: committed bytes that must decode to the committed latents on any machine.

Two checks, kept apart because they promise different things:

* **decoding** (every machine): the committed packets of each seeded and zoo model decode to
  latents whose SHA-256 is committed, and the tail predicts the committed classes. The decoder's
  choices (CDF tables, scale indexes, means) are integer arithmetic, so this holds on any CPU.
* **encoding** (the reference machine kind only: the same CPU model and vector instruction sets,
  one torch thread): the head writes exactly the
  committed bytes. The analysis transform ``g_a`` runs in floating point, whose last bits differ
  between CPUs and even between thread counts on one CPU (oneDNN picks other kernels), so a
  latent close to a rounding boundary can become another symbol, and a ``q8`` packet, which
  carries its float scale, other bytes: a different but equally valid packet. This check
  catches unintended changes of the head where it can; packets are made and compared with one
  thread whatever the test process did before.

Regenerate after an intended bitstream change with
``ENTROGUARD_REGEN_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import cache
from pathlib import Path

import pytest
import torch
from eg_testutil import PRIORS, SMALL_ARCHS, seeded_images, seeded_model

from entroguard.serve.framing import decode_batch, encode_batch
from entroguard.threads import torch_threads

GOLDEN = Path(__file__).parent / "golden"
DECODED = GOLDEN / "decoded.json"
REGEN = os.environ.get("ENTROGUARD_REGEN_GOLDEN") == "1"
SEEDED = [f"seeded-{arch}-{prior}" for arch in SMALL_ARCHS for prior in PRIORS]


#: Instruction-set flags that decide which float kernels oneDNN runs.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")


def machine_kind() -> dict:
    """What decides the encoder's float arithmetic: CPU architecture, model (name, family,
    model number: one name covers several generations) and vector instruction sets, torch."""
    kind = {"machine": platform.machine(), "cpu": platform.processor(),
            "torch": torch.__version__.split("+")[0]}  # fmt: skip
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
        kind["cpu"] = fields.get("model name", kind["cpu"])
        kind["cpu_id"] = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
        flags = set((fields.get("flags") or fields.get("Features") or "").split())
        kind["isa"] = " ".join(f for f in KERNEL_FLAGS if f in flags)
    return kind


@cache
def _zoo_rows() -> dict[str, dict]:
    from entroguard.train.zoo import list_zoo

    return {f"zoo-{row['name']}": row for row in list_zoo()}


@cache
def _zoo_images() -> torch.Tensor:
    from entroguard.data import load_dataset

    return load_dataset("fashion-mnist", "test").to_float(slice(0, 4))


def _model_and_images(key: str):
    if key.startswith("seeded-"):
        arch, prior = key.removeprefix("seeded-").rsplit("-", 1)
        return seeded_model(arch, prior), seeded_images(3, seed=11)
    from entroguard.train.checkpoint import load_checkpoint

    return load_checkpoint(_zoo_rows()[key]["path"]), _zoo_images()


def _latent_digest(latent: torch.Tensor) -> str:
    return hashlib.sha256(latent.contiguous().numpy().tobytes()).hexdigest()


def _decoded_record(model, packets: list[bytes]) -> dict:
    with torch.no_grad():
        latent = model.decompress(model.packets_to_batch(packets))
        predictions = model.classify(latent).argmax(dim=1).tolist()
    return {"latent_sha256": _latent_digest(latent), "predictions": predictions}


def _encode(model, images) -> list[bytes]:
    with torch_threads(1):
        return model.to_packets(images)


def _regenerate(key: str) -> None:
    model, images = _model_and_images(key)
    packets = _encode(model, images)
    (GOLDEN / "packets").mkdir(parents=True, exist_ok=True)
    (GOLDEN / "packets" / f"{key}.bin").write_bytes(encode_batch(packets))
    records = json.loads(DECODED.read_text()) if DECODED.exists() else {}
    records[key] = _decoded_record(model, packets) | {"encoded_on": machine_kind()}
    DECODED.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")


def _golden(key: str) -> tuple[list[bytes], dict]:
    if REGEN:
        _regenerate(key)
    path = GOLDEN / "packets" / f"{key}.bin"
    records = json.loads(DECODED.read_text())
    assert path.exists() and key in records, f"no golden {key}: run with ENTROGUARD_REGEN_GOLDEN=1"
    return decode_batch(path.read_bytes()), records[key]


def _keys() -> list[str]:
    return SEEDED + sorted(_zoo_rows())


@pytest.mark.parametrize("key", _keys())
def test_committed_packets_decode_to_the_committed_latents(key):
    packets, record = _golden(key)
    model, _ = _model_and_images(key)
    assert _decoded_record(model, packets) == {
        "latent_sha256": record["latent_sha256"],
        "predictions": record["predictions"],
    }, f"{key}: the committed packets no longer decode to the committed latents"


@pytest.mark.parametrize("key", _keys())
def test_the_head_writes_the_committed_bytes_on_the_reference_machine(key):
    packets, record = _golden(key)
    model, images = _model_and_images(key)
    written = _encode(model, images)
    assert written == _encode(model, images)  # run to run, same process
    if record["encoded_on"] != machine_kind():
        pytest.skip(
            f"encoder bytes are compared only on {record['encoded_on']} (this is "
            f"{machine_kind()}); decoding is checked on every machine"
        )
    assert written == packets, f"{key}: the head writes other bytes than the committed packets"


def test_the_zoo_is_shipped():
    students = [r for r in _zoo_rows().values() if r["recipe"] == "entropic_student"]
    assert len(students) == 24, "the zoo is incomplete: train it with `entroguard train --zoo`"
