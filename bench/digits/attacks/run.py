"""Run the attacks on P1 (forget zero..four, keep five..nine): every target, every attack asked for."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..benchmark import P1_FORGET
from ..unlearning import DigitsBench
from .embedding import EmbeddingSettings, embedding_attack
from .refill import TRAINED, Refill, as_missing, candidate_sets, hits, refill
from .retrain import RetrainSettings, retrain
from .targets import FIA, LEARNED, LEARNED_DECOYS, ORIGINAL, Target, build_targets
from .wordings import wording_accuracy

logger = logging.getLogger(__name__)

# (threat, fill) pairs run on each masked target; "mask leaked" does not depend on what the
# bake wrote at the pruned entries, so it is run on the plain bake only.
REFILLS = {
    LEARNED: [
        ("mask leaked", "true values (control)"),
        ("mask leaked", "low-rank completion"),
        ("mask leaked", "row statistics"),
        ("exact zeros", "low-rank completion"),
        ("exact zeros", "row statistics"),
        ("exact zeros", TRAINED),
    ],
    FIA: [
        ("mask leaked", "true values (control)"),
        ("mask leaked", "low-rank completion"),
        ("exact zeros", "low-rank completion"),
        ("exact zeros", TRAINED),
    ],
    LEARNED_DECOYS: [
        ("exact zeros", "low-rank completion"),
        ("outliers", "true values (control)"),
        ("outliers", "low-rank completion"),
        ("all FFN2 weights", TRAINED),
    ],
}


@dataclass(frozen=True)
class AttackSettings:
    attacks: tuple[str, ...]
    methods: tuple[str, ...]
    n: int = 20  # images per digit and seed: forget / preserve and the refill rows
    seeds: tuple[int, ...] = (0,)
    wording_n: int = 6  # images per wording prompt, digit and seed
    embedding_n: int = 10  # images per digit, seed and budget
    embedding: EmbeddingSettings = EmbeddingSettings()
    retrain: RetrainSettings = RetrainSettings()
    decoy_seed: int = 0


@dataclass
class Scores:
    """Judge accuracy per digit (mean over seeds) of one model."""

    accuracy: np.ndarray

    @property
    def forget(self) -> float:
        return float(self.accuracy[P1_FORGET].mean())

    @property
    def preserve(self) -> float:
        return float(self.accuracy[[d for d in range(10) if d not in P1_FORGET]].mean())


@dataclass
class RefillRow:
    target: str
    threat: str
    fill: str
    candidates: int
    true_hits: int
    pruned: int
    ranks: list[int]
    scores: Scores


@dataclass
class AttackResult:
    settings: AttackSettings
    scores: dict[str, Scores] = field(default_factory=dict)  # target -> plain prompt
    wordings: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> family -> forget acc
    prompts: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> template -> forget acc
    embedding: dict[str, dict[int, float]] = field(default_factory=dict)  # target -> budget -> success
    refills: list[RefillRow] = field(default_factory=list)
    numerals: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_attacks(bench: DigitsBench, settings: AttackSettings, mask_path: Path | None) -> AttackResult:
    from .wordings import numerals_known

    result = AttackResult(settings, numerals=numerals_known(bench.sampling.tokenizer))
    started = time.perf_counter()
    targets = build_targets(bench, P1_FORGET, settings.methods, mask_path, settings.decoy_seed)
    for target in targets:
        result.scores[target.name] = Scores(bench.accuracy(target.unet).mean(axis=0))
        logger.info("%s: forget %.3f, preserve %.3f", target.name, result.scores[target.name].forget,
                    result.scores[target.name].preserve)  # fmt: skip
    result.seconds["edits and plain prompt"] = time.perf_counter() - started
    prompt_targets = [t for t in targets if t.name != LEARNED_DECOYS]  # the decoy bake is for the refill attack
    if "wordings" in settings.attacks:
        started = time.perf_counter()
        for target in prompt_targets:
            family, prompts = wording_accuracy(bench, target.unet, P1_FORGET, settings.wording_n, settings.seeds)
            result.wordings[target.name], result.prompts[target.name] = family, prompts
            logger.info("wordings on %s: %s", target.name, family)
        result.seconds["wordings"] = time.perf_counter() - started
    if "embedding" in settings.attacks:
        started = time.perf_counter()
        for target in prompt_targets:
            result.embedding[target.name] = embedding_attack(
                bench, target.unet, P1_FORGET, settings.embedding, settings.embedding_n, settings.seeds
            )
        result.seconds["embedding"] = time.perf_counter() - started
    if "refill" in settings.attacks:
        started = time.perf_counter()
        result.refills = _refills(bench, targets, settings.retrain)
        result.seconds["refill"] = time.perf_counter() - started
    return result


def _refills(bench: DigitsBench, targets: list[Target], retrain_settings: RetrainSettings) -> list[RefillRow]:
    original = next(t for t in targets if t.name == ORIGINAL)
    rows = []
    for target in targets:
        for threat, fill in REFILLS.get(target.name, []):
            if fill == TRAINED:
                flat = candidate_sets(target.unet, target.mask, threat)
                missing = None if threat == "all FFN2 weights" else as_missing(target.unet, flat)
                trained = retrain(bench, target.unet, missing, P1_FORGET, retrain_settings)
                count = sum(int(i.numel()) for i in flat.values())
                made = Refill(threat, fill, trained, count, hits(target.mask, flat), [])
            else:
                made = refill(target.unet, original.unet, target.mask, threat, fill)
            # nothing refilled: the model is the target itself, no need to sample it again
            scores = Scores(bench.accuracy(made.unet).mean(axis=0)) if made.candidates else None
            rows.append(RefillRow(target.name, threat, fill, made.candidates, made.true_hits,
                                  target.mask.pruned_count, made.ranks, scores))  # fmt: skip
            logger.info("refill %s / %s / %s: %s", target.name, threat, fill,
                        "nothing to refill" if scores is None else f"forget {scores.forget:.3f}")  # fmt: skip
    return rows


def save_result(result: AttackResult, path: Path, command: str, wall: float) -> None:
    """The run's numbers as JSON, so that the section and plot can be written again without rerunning."""
    import json
    from dataclasses import asdict

    from fia_engine.output_paths import write_text_atomic

    def scores(s: Scores | None):
        return None if s is None else s.accuracy.tolist()

    data = {
        "command": command,
        "wall": wall,
        "settings": asdict(result.settings),
        "scores": {k: scores(v) for k, v in result.scores.items()},
        "wordings": result.wordings,
        "prompts": result.prompts,
        "embedding": result.embedding,
        "refills": [{**asdict(r), "scores": scores(r.scores)} for r in result.refills],
        "numerals": result.numerals,
        "seconds": result.seconds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def load_result(path: Path) -> tuple[AttackResult, str, float]:
    """(result, command, wall seconds) of a run saved by ``save_result``."""
    import json

    data = json.loads(path.read_text())

    def scores(values):
        return None if values is None else Scores(np.asarray(values))

    settings = dict(data["settings"])
    settings["retrain"] = RetrainSettings(**settings.get("retrain", {}))
    settings["embedding"] = EmbeddingSettings(
        **{**settings["embedding"], "budgets": tuple(settings["embedding"]["budgets"])}
    )
    settings = AttackSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    result = AttackResult(
        settings,
        scores={k: scores(v) for k, v in data["scores"].items()},
        wordings=data["wordings"],
        prompts=data["prompts"],
        embedding={k: {int(b): v for b, v in e.items()} for k, e in data["embedding"].items()},
        refills=[RefillRow(**{**r, "scores": scores(r["scores"])}) for r in data["refills"]],
        numerals=data["numerals"],
        seconds=data["seconds"],
    )
    return result, data["command"], data["wall"]
