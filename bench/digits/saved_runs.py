"""Protocol results as JSON, so that one protocol can run split over several processes.

The model is tiny, so one process gains little from a second CPU thread; two processes with
one thread each, on different forget sets, finish in about half the time. Each saves its
``ProtocolResult``; ``merge`` joins them into one result for the report. The original
model's images depend only on the seeds and the images per digit, so parts must agree on
those, and the first part's original row stands for all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fia_engine.errors import InvalidInputError
from fia_engine.output_paths import write_text_atomic

from .benchmark import ProtocolResult
from .unlearning import Row

FORMAT = "fia-digits-protocol"


@dataclass
class SavedRun:
    result: ProtocolResult
    command: str
    settings_line: str
    threads: int


def _row_dict(row: Row) -> dict:
    return {
        "method": row.method,
        "forget": list(row.forget),
        "accuracy": row.accuracy.tolist(),
        "pruned_fraction": row.pruned_fraction,
        "seconds": row.seconds,
    }


def _row(data: dict) -> Row:
    return Row(
        data["method"], list(data["forget"]), np.asarray(data["accuracy"]), data["pruned_fraction"], data["seconds"]
    )


def save_run(run: SavedRun, path: Path) -> Path:
    result = run.result
    data = {
        "format": FORMAT,
        "name": result.name,
        "images_per_digit": result.images_per_digit,
        "seeds": list(result.seeds),
        "command": run.command,
        "settings_line": run.settings_line,
        "threads": run.threads,
        "original": _row_dict(result.original),
        "rows": [_row_dict(row) for row in result.rows],
    }
    return write_text_atomic(path, json.dumps(data, indent=1))


def load_run(path: Path) -> SavedRun:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path}: not a readable saved protocol run ({error})") from error
    if data.get("format") != FORMAT:
        raise InvalidInputError(
            f"{path}: not a saved protocol run (format {data.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        result = ProtocolResult(
            data["name"],
            _row(data["original"]),
            [_row(row) for row in data["rows"]],
            data["images_per_digit"],
            tuple(data["seeds"]),
        )
        return SavedRun(result, data["command"], data["settings_line"], data["threads"])
    except (KeyError, TypeError) as error:
        raise InvalidInputError(f"{path}: a saved protocol run with missing or damaged entries ({error!r})") from error


def merge(runs: list[SavedRun], protocol: str) -> SavedRun:
    """One run of ``protocol`` ("P1", "P2") from parts that split its forget sets; rows by forget-set size."""
    if not runs:
        raise InvalidInputError("nothing to merge: give at least one saved run")
    names = sorted({run.result.name for run in runs})
    if names != [protocol]:
        raise InvalidInputError(f"expected saved {protocol} runs, got {', '.join(names)}")
    first = runs[0]
    for run in runs[1:]:
        same = (run.result.images_per_digit, run.result.seeds, run.settings_line) == (
            first.result.images_per_digit,
            first.result.seeds,
            first.settings_line,
        )
        if not same:
            raise InvalidInputError("saved runs differ in images per digit, seeds or settings: they cannot be merged")
    rows = [row for run in runs for row in run.result.rows]
    seen = [(row.method, tuple(row.forget)) for row in rows]
    if len(set(seen)) != len(seen):
        raise InvalidInputError("saved runs repeat a method on the same forget set: give each part once")
    rows.sort(key=lambda row: len(row.forget))  # stable: methods keep their run order within one k
    result = ProtocolResult(
        first.result.name, first.result.original, rows, first.result.images_per_digit, first.result.seeds
    )
    command = " ; ".join(run.command for run in runs)
    return SavedRun(result, command, first.settings_line, max(run.threads for run in runs))
