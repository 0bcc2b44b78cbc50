"""FIA on the gate-passing model (bench/digits/candidates/weak_text_003), P1 at reduced size.

At full size (RESULTS 16, 3 seeds x 50 images) FIA fast takes the forgotten digits from 90.9 %
to 76.3 % and keeps 0.94 of the original's preserve accuracy: it forgets partly, far from the
issue's 5 %. What is asserted here is that measured effect, against a control that prunes as
many weights of every layer at random: a broken collection (saliency that does not follow the
concept), localisation (the wrong end of the ranking) or fusion (nothing or everything pruned)
forgets no more than the random control, or takes the kept digits down with it.
"""

import pytest

from bench.digits import PACKAGE_DIR
from bench.digits.benchmark import P1_FORGET
from bench.digits.diagnose import random_pruned_unet
from bench.digits.methods import fia_group
from bench.digits.unlearning import DigitsBench, FiaSettings

MODEL = PACKAGE_DIR / "candidates" / "weak_text_003"
KEPT = [d for d in range(10) if d not in P1_FORGET]


# The frozen default (r2 = 0.01, about 2.3 % pruned) and r2 = 0.02, where FIA prunes about as
# much as the gate's learned mask (4.3 %).
R2 = (0.01, 0.02)
# Measured at full size (RESULTS 16) and at this size (n = 20, seed 0: diagnose-fia on this model):
# r2 = 0.01 takes forget from 0.91 to 0.81, r2 = 0.02 to 0.66; the random control stays at 0.91.
MIN_DROP = {0.01: 0.06, 0.02: 0.15}


@pytest.fixture(scope="module")
def judged():
    bench = DigitsBench(MODEL, images_per_digit=10, seeds=(0,), sample_steps=12)
    rows, pruned = {"original": bench.accuracy().mean(axis=0)}, {}
    for r2 in R2:
        edit = fia_group(FiaSettings(r2=r2), modes=("fast",), union=False)(bench, P1_FORGET)["FIA fast"]
        rows[r2] = bench.accuracy(edit.unet).mean(axis=0)
        rows[("random", r2)] = bench.accuracy(random_pruned_unet(bench.engine.unet, edit.made, seed=0)).mean(axis=0)
        pruned[r2] = edit.fraction
    summary = {name: (float(acc[P1_FORGET].mean()), float(acc[KEPT].mean())) for name, acc in rows.items()}
    print("forget / preserve:", {str(name): f"{f:.2f} / {p:.2f}" for name, (f, p) in summary.items()}, pruned)
    return summary, pruned


def test_the_gate_model_draws_its_digits(judged):
    summary, _ = judged
    forget, preserve = summary["original"]
    assert forget >= 0.8 and preserve >= 0.8, f"original {forget:.2f} / {preserve:.2f}"


@pytest.mark.parametrize("r2", R2)
def test_fia_forgets_more_than_a_random_mask_of_its_size(judged, r2):
    summary, pruned = judged
    original, fia, random = summary["original"][0], summary[r2][0], summary[("random", r2)][0]
    assert 0.5 * r2 <= pruned[r2] <= 5 * r2, f"FIA pruned {100 * pruned[r2]:.2f} % of the FFN2 weights"
    assert original - fia >= MIN_DROP[r2], f"FIA fast leaves the forgotten digits at {fia:.2f} (original {original:.2f})"
    assert original - fia >= (original - random) + MIN_DROP[r2] / 2, f"FIA {fia:.2f}, random {random:.2f}"


@pytest.mark.parametrize("r2", R2)
def test_fia_keeps_the_other_digits(judged, r2):
    summary, _ = judged
    assert summary[r2][1] >= 0.85 * summary["original"][1], f"{summary}"
