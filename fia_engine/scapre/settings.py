"""ScaPre's settings: one frozen dataclass, validated before any work starts.

Every number here is documented in docs/scapre.md with the reason for its default. In
mode "uce" the ScaPre switches (row mask, spectral weighting, Bures step, entropy blend,
output-space regulariser) are ignored: the result is the plain closed-form edit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..errors import InvalidInputError

MODES = ("scapre", "uce")


@dataclass(frozen=True)
class ScaPreSettings:
    mode: str = "scapre"  # "scapre" or "uce" (the closed form alone)
    preserve_weight: float = 1.0  # lam: a preserve token counts as much as a concept token
    ridge: float = 0.1  # gamma: pull toward the original weights in every direction (UCE's lambda)
    row_mask: bool = False  # off by default: as we read it, it stops the erasure (docs/scapre.md, measured)
    mask_power: float = 2.0  # p in sigmoid(z)^p
    spectral: bool = True
    spectral_rho: float = 10.0  # cap in units of one concept's energy: ~rho concepts on a direction halve it
    bures: bool = True
    bures_eta: float = 0.1  # proximal weight: the edited row moves 1 / (1 + eta) of the way
    entropy_blend: bool = False  # needs the row mask's distribution; off with it
    blend_strength: float = 0.5  # beta = 1 - blend_strength * normalised entropy of the row mask
    output_reg: float = 0.0  # mu of the output-space regulariser; > 0 solves a Sylvester equation
    rank_tol: float = 1e-6  # singular values below rank_tol * largest are dropped when storing

    def validate(self) -> ScaPreSettings:
        """Return self, or raise InvalidInputError naming the setting and its allowed range."""
        if self.mode not in MODES:
            raise InvalidInputError(f"ScaPre mode must be one of {MODES}, got {self.mode!r}")
        for name in ("row_mask", "spectral", "bures", "entropy_blend"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"ScaPre setting {name} must be True or False, got {getattr(self, name)!r}")
        _check(self, "preserve_weight", low=0.0)
        _check(self, "ridge", low=0.0)
        _check(self, "mask_power", low=0.0, low_open=True, high=64.0)
        _check(self, "spectral_rho", low=0.0, low_open=True)
        _check(self, "bures_eta", low=0.0)
        _check(self, "blend_strength", low=0.0, high=1.0)
        _check(self, "output_reg", low=0.0)
        _check(self, "rank_tol", low=0.0, high=0.5)
        return self

    @property
    def active(self) -> dict[str, bool]:
        """Which ScaPre steps run: all off in mode "uce", whatever the switches say."""
        scapre = self.mode == "scapre"
        return {
            "spectral": scapre and self.spectral,
            "row_mask": scapre and self.row_mask,
            "bures": scapre and self.bures and self.bures_eta > 0,
            "entropy_blend": scapre and self.entropy_blend and self.blend_strength > 0,
            "sylvester": scapre and self.output_reg > 0,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ScaPreSettings:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return replace(cls(), **known)


def _check(settings: ScaPreSettings, name: str, low: float, high: float | None = None, low_open: bool = False) -> None:
    value = getattr(settings, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        limit = f" and <= {high}" if high is not None else ""
        raise InvalidInputError(f"ScaPre setting {name} must be a finite number {bound}{limit}, got {value!r}")
