"""Results in SQLite: one row per condition, one row per image per condition, and the rows of
each leak measurement (a model under a protection).

A condition's summary and its per-image rows are written in one transaction, so a campaign
killed at any moment leaves only whole conditions behind; a rerun skips them and never
writes a duplicate (the condition key is the primary key).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from entroguard.errors import ResultStoreError
from entroguard.measure import Measurement

SCHEMA = """
CREATE TABLE IF NOT EXISTS conditions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL, arch TEXT NOT NULL, prior TEXT NOT NULL, beta REAL,
    threat TEXT NOT NULL, strength REAL NOT NULL, defense TEXT NOT NULL,
    params TEXT NOT NULL,
    n INTEGER NOT NULL, top1 REAL NOT NULL,
    est_bytes REAL NOT NULL, payload_bytes REAL NOT NULL, packet_bytes REAL NOT NULL,
    seconds REAL NOT NULL, finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    key TEXT NOT NULL REFERENCES conditions(key),
    image INTEGER NOT NULL,
    est_bytes REAL NOT NULL, payload_bytes INTEGER NOT NULL, packet_bytes INTEGER NOT NULL,
    correct INTEGER NOT NULL, predicted INTEGER NOT NULL,
    PRIMARY KEY (key, image)
);
CREATE TABLE IF NOT EXISTS leak (
    unit TEXT NOT NULL,
    model TEXT NOT NULL, arch TEXT NOT NULL, prior TEXT NOT NULL, beta REAL,
    defense TEXT NOT NULL, point TEXT NOT NULL, probe TEXT NOT NULL,
    top1 REAL NOT NULL, val_top1 REAL, epochs INTEGER, stopped_early INTEGER,
    n_shadow INTEGER NOT NULL, n_test INTEGER NOT NULL,
    payload_bytes REAL, agreement REAL,
    seconds REAL NOT NULL, finished_at REAL NOT NULL,
    PRIMARY KEY (unit, point, probe)
);
CREATE TABLE IF NOT EXISTS runs (
    started_at REAL NOT NULL,
    identity TEXT NOT NULL, config TEXT NOT NULL, provenance TEXT NOT NULL
);
"""
LEAK_COLUMNS = (
    "model", "arch", "prior", "beta", "defense", "point", "probe", "top1", "val_top1", "epochs",
    "stopped_early", "n_shadow", "n_test", "payload_bytes", "agreement", "seconds",
)  # fmt: skip


@dataclass(frozen=True)
class ConditionId:
    """Identity of one measured condition."""

    model: str
    threat: str
    strength: float
    defense: str

    @property
    def key(self) -> str:
        return f"{self.model}|{self.threat}|{self.strength:g}|{self.defense}"


class ResultStore:
    """The campaign's ``results.sqlite``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ResultStoreError(
                f"{self.path} is not a readable results store ({exc}): move it aside and "
                "rerun to measure again from scratch, or restore it from a copy"
            ) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def done_keys(self) -> set[str]:
        """Keys of the conditions already measured."""
        return {row[0] for row in self.db.execute("SELECT key FROM conditions")}

    def add(
        self,
        cid: ConditionId,
        model_info: dict,
        params: str,
        indices: np.ndarray,
        result: Measurement,
        seconds: float,
    ) -> None:
        """Write one condition (summary + per-image rows) atomically."""
        s = result.summary()
        with self.db:
            self.db.execute(
                "INSERT INTO conditions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    cid.key, cid.model, model_info["arch"], model_info["prior"],
                    model_info.get("beta"), cid.threat, cid.strength, cid.defense, params,
                    s["n"], s["top1"], s["est_bytes"], s["payload_bytes"], s["packet_bytes"],
                    seconds, time.time(),
                ),
            )  # fmt: skip
            self.db.executemany(
                "INSERT INTO images VALUES (?,?,?,?,?,?,?)",
                zip(
                    [cid.key] * result.n,
                    indices.tolist(),
                    result.est_bytes.tolist(),
                    result.payload_bytes.tolist(),
                    result.packet_bytes.tolist(),
                    result.correct.astype(int).tolist(),
                    result.predicted.tolist(),
                    strict=True,
                ),
            )

    def add_run(self, identity: dict, config: str, provenance: dict) -> None:
        """Record one run of a campaign into this store (its settings, config and provenance)."""
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?,?,?,?)", (time.time(),
                            json.dumps(identity, sort_keys=True), config,
                            json.dumps(provenance, sort_keys=True)))  # fmt: skip

    def runs(self) -> list[dict]:
        """Every recorded run, oldest first: ``started_at``, ``identity``, ``config`` (JSON
        text) and ``provenance``."""
        cur = self.db.execute("SELECT started_at, identity, config, provenance FROM runs "
                              "ORDER BY rowid")  # fmt: skip
        return [{"started_at": t, "identity": json.loads(i), "config": c,
                 "provenance": json.loads(p)} for t, i, c, p in cur]  # fmt: skip

    def measured_identity(self) -> dict | None:
        """The settings the stored results were measured with (None: nothing measured yet)."""
        has_results = self.db.execute(
            "SELECT EXISTS(SELECT 1 FROM conditions) OR EXISTS(SELECT 1 FROM leak)"
        ).fetchone()[0]
        runs = self.runs()
        return runs[0]["identity"] if has_results and runs else None

    def leak_done_units(self) -> set[str]:
        """Keys of the leak measurements (a model under a protection) already done."""
        return {row[0] for row in self.db.execute("SELECT DISTINCT unit FROM leak")}

    def add_leak(self, unit: str, model_info: dict, rows: list[dict], seconds: float) -> None:
        """Write one leak measurement's rows (from :func:`entroguard.privacy.leak.leak_rows`)
        atomically."""
        now = time.time()
        values = [
            (unit, r["model"], model_info["arch"], model_info["prior"], model_info.get("beta"),
             r["defense"], r["point"], r["probe"], r["top1"], r.get("val_top1"), r.get("epochs"),
             None if r.get("stopped_early") is None else int(r["stopped_early"]),
             r["n_shadow"], r["n_test"], r.get("payload_bytes"), r.get("agreement"), seconds,
             now)
            for r in rows
        ]  # fmt: skip
        with self.db:
            self.db.executemany(f"INSERT INTO leak VALUES ({','.join('?' * 18)})", values)

    def leak_rows(self) -> list[dict]:
        """Every leak row as a dict (``LEAK_COLUMNS``): by model, unprotected first, then by
        protection; in each, in measurement order."""
        cur = self.db.execute(f"SELECT {', '.join(LEAK_COLUMNS)} FROM leak "
                              "ORDER BY model, defense <> 'none', defense, rowid")  # fmt: skip
        return [dict(zip(LEAK_COLUMNS, row, strict=True)) for row in cur]

    def conditions(self) -> list[dict]:
        """Every condition row as a dict, in an order that does not depend on which worker
        finished first: by model; clean first, then by threat and strength; undefended first,
        then by defence."""
        cur = self.db.execute("SELECT * FROM conditions ORDER BY model, threat <> 'clean', "
                              "threat, strength, defense <> 'none', defense")  # fmt: skip
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def per_image(self, key: str) -> dict[str, np.ndarray]:
        """Per-image arrays of one condition, ordered by image index."""
        rows = self.db.execute(
            "SELECT image, est_bytes, payload_bytes, packet_bytes, correct FROM images "
            "WHERE key = ? ORDER BY image",
            (key,),
        ).fetchall()
        arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
        return {
            "image": arr[:, 0].astype(np.int64),
            "est_bytes": arr[:, 1],
            "payload_bytes": arr[:, 2],
            "packet_bytes": arr[:, 3],
            "correct": arr[:, 4],
        }

    def iter_per_image(self, keys: Iterable[str]) -> Iterable[tuple[str, dict[str, np.ndarray]]]:
        for key in keys:
            yield key, self.per_image(key)
