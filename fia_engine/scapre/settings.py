"""ScaPre's settings: one frozen dataclass, validated before any work starts.

Every number here is documented in docs/scapre.md with its source: the values marked
"release" are those of the authors' public release (github.com/kaiyuan02415/ScaPre,
edit/erase.py and script/erase.sh, the Imagenette-10 command), the others our own. In
mode "uce" the ScaPre switches (row mask, spectral weighting, Bures step, entropy blend,
output-space regulariser) are ignored: the result is the plain closed-form edit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from ..errors import InvalidInputError

MODES = ("scapre", "uce")
MASK_FORMS = ("target", "confine")
BURES_FORMS = ("exact", "release")
SPECTRAL_FORMS = ("cap", "release")


@dataclass(frozen=True)
class ScaPreSettings:
    mode: str = "scapre"  # "scapre" or "uce" (the closed form alone)
    preserve_weight: float = 1.0  # lam: a preserve token counts as much as a concept token
    ridge: float = 0.5  # gamma: pull toward the original weights in every direction (release: lamb 0.5)
    row_mask: bool = True  # release: always on in its Imagenette / art pipeline
    mask_form: str = "target"  # "target" (release: the mask scales each row's target) or "confine"
    mask_power: float = 2.0  # p in sigmoid(z / T)^p (release: 2)
    mask_temperature: float = 0.7  # T (release: 0.7)
    spectral: bool = False  # release: its svd step is off in the Imagenette command; on for many concepts
    spectral_form: str = "cap"  # "cap" (ours: weights the concept term) or "release" (its --svd residual term)
    spectral_rho: float = 10.0  # form "cap": in units of one concept's energy, ~rho concepts on a direction halve it
    spectral_temperature: float = 1.0  # form "release": T_sigma (release: 1)
    spectral_power: float = 1.0  # form "release": p_sigma (release: 1)
    spectral_scale: float = 1.0  # form "release": weight of the residual term (release: its erase scale, 1)
    bures: bool = False  # release: only in its large-scale pipeline (erase_scale.py)
    bures_eta: float = 0.1  # form "exact": proximal weight, the edited row moves 1 / (1 + eta) of the way
    bures_form: str = "exact"  # "exact" (ours, low rank) or "release" (its radius/direction step, dense)
    bures_iters: int = 1  # form "release": iterations (release: 1 in its large-scale commands)
    entropy_blend: bool = True  # release: always on in its Imagenette / art pipeline
    blend_floor: float = 0.8  # alpha_min: a row keeps at least this share of its edit (release: 0.8)
    entropy_bins: int = 20  # histogram bins of a row's responses (release: 20)
    output_reg: float = 0.0  # mu of the output-space regulariser; > 0 solves a Sylvester equation
    rank_tol: float = 1e-6  # singular values below rank_tol * largest are dropped when storing

    def validate(self) -> ScaPreSettings:
        """Return self, or raise InvalidInputError naming the setting and its allowed range."""
        if self.mode not in MODES:
            raise InvalidInputError(f"ScaPre mode must be one of {MODES}, got {self.mode!r}")
        if self.spectral_form not in SPECTRAL_FORMS:
            raise InvalidInputError(f"ScaPre spectral_form must be one of {SPECTRAL_FORMS}, got {self.spectral_form!r}")
        if self.bures_form not in BURES_FORMS:
            raise InvalidInputError(f"ScaPre bures_form must be one of {BURES_FORMS}, got {self.bures_form!r}")
        if self.mask_form not in MASK_FORMS:
            raise InvalidInputError(f"ScaPre mask_form must be one of {MASK_FORMS}, got {self.mask_form!r}")
        for name in ("row_mask", "spectral", "bures", "entropy_blend"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"ScaPre setting {name} must be True or False, got {getattr(self, name)!r}")
        _check(self, "preserve_weight", low=0.0)
        _check(self, "ridge", low=0.0)
        _check(self, "mask_power", low=0.0, low_open=True, high=64.0)
        _check(self, "mask_temperature", low=0.0, low_open=True, high=100.0)
        _check(self, "spectral_rho", low=0.0, low_open=True)
        _check(self, "spectral_temperature", low=0.0, low_open=True)
        _check(self, "spectral_power", low=0.0, low_open=True, high=64.0)
        _check(self, "spectral_scale", low=0.0, high=10.0)
        _check(self, "bures_eta", low=0.0)
        _check(self, "blend_floor", low=0.0, high=1.0)
        _check_int(self, "entropy_bins", 2, 1000)
        _check_int(self, "bures_iters", 1, 100)
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
            "bures": scapre and self.bures and (self.bures_eta > 0 or self.bures_form == "release"),
            "entropy_blend": scapre and self.entropy_blend and self.blend_floor < 1,
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


def _check_int(settings: ScaPreSettings, name: str, low: int, high: int) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"ScaPre setting {name} must be an integer from {low} to {high}, got {value!r}")
