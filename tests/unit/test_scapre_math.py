"""ScaPre's formulas: golden checks against direct solves, and what each switch does.

Everything runs on tiny random matrices in float64, so the closed forms can be compared
with a least-squares solve of the stacked, square-root-weighted system.
"""

import math

import pytest
import torch

from fia_engine.errors import InvalidInputError
from fia_engine.scapre import LayerDelta, ScaPreSettings, compute_edit
from fia_engine.scapre.geometry import (
    blend_factors,
    bures_distance,
    bures_proximal,
    bures_step,
    release_bures,
    row_response_entropy,
)
from fia_engine.scapre.row_mask import (
    concept_row_masks,
    information_row_mask,
    row_mutual_information,
    soft_row_mask,
)
from fia_engine.scapre.solve import build_system, closed_form_delta
from fia_engine.scapre.spectral import concept_energy, release_residual, spectral_filter, spectral_weighting
from fia_engine.scapre.sylvester import output_gram, solve_sylvester

OFF = dict(row_mask=False, spectral=False, bures=False, entropy_blend=False)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return {"w": rand(6, 10), "c": rand(3, 10), "a": rand(3, 10), "p": rand(4, 10)}


def stacked_lstsq(w, c, a, p, lam, gamma, weighting=None, target_scale=None) -> torch.Tensor:
    """D from lstsq on [T E_c; sqrt(lam) E_p; sqrt(gamma) I] D^T = [T (E_a W^T - E_c W^T); 0; 0].

    target_scale (d_out x n) multiplies the targets E_a W^T entry by entry (the row mask's
    "target" form).
    """
    t = torch.eye(len(c), dtype=c.dtype) if weighting is None else weighting
    targets = a @ w.T if target_scale is None else (a @ w.T) * target_scale.T
    residual = targets - c @ w.T
    left = torch.cat([t @ c, math.sqrt(lam) * p, math.sqrt(gamma) * torch.eye(c.shape[1], dtype=c.dtype)])
    right = torch.cat([t @ residual, torch.zeros(len(p) + c.shape[1], w.shape[0], dtype=c.dtype)])
    return torch.linalg.lstsq(left, right).solution.T


# --- golden ------------------------------------------------------------------------------------


def test_uce_closed_form_equals_least_squares(problem):
    w, c, a, p = problem.values()
    expected = stacked_lstsq(w, c, a, p, lam=0.7, gamma=0.3)
    assert relative_error(closed_form_delta(w, c, a, p, 0.7, 0.3), expected) < 1e-10
    edit = compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(mode="uce", preserve_weight=0.7, ridge=0.3))
    assert relative_error(edit.delta("x.to_k").double(), expected) < 1e-5  # stored as float32


def test_spectral_filter_by_hand():
    # s^2 = 1, 4, 9; unit 4; rho = 1: phi = 4/5, 4/8, 4/13
    phi = spectral_filter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), rho=1.0, unit=4.0)
    torch.testing.assert_close(phi, torch.tensor([4 / 5, 4 / 8, 4 / 13], dtype=torch.float64))


def test_concept_energy_by_hand():
    # concept 0: rows (3, 0) and (0, 1): top s^2 = 9; concept 1: rows (1, 1) and (1, 1): top s^2 = 4. Mean 6.5.
    rows = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert float(concept_energy(rows, torch.tensor([0, 1, 0, 1]))) == pytest.approx(6.5)
    # every row its own concept: the mean squared row norm
    assert float(concept_energy(rows, torch.arange(4))) == pytest.approx((9 + 2 + 1 + 2) / 4)


def test_spectral_weighting_is_the_filter_in_the_singular_basis(problem):
    c = problem["c"]
    ids = torch.tensor([0, 0, 1])
    u, sigma, _ = torch.linalg.svd(c, full_matrices=False)
    unit = (torch.linalg.matrix_norm(c[:2], ord=2) ** 2 + c[2].square().sum()) / 2
    phi = 2.0 * unit / (sigma**2 + 2.0 * unit)
    torch.testing.assert_close(spectral_weighting(c, rho=2.0, concept_ids=ids), phi.sqrt()[:, None] * u.T)


def test_spectral_weighting_barely_touches_a_lone_concept(problem):
    """No direction of one concept's rows exceeds that concept's own energy: phi >= rho / (1 + rho)."""
    c = problem["c"]
    alone = torch.zeros(len(c), dtype=torch.long)
    weights = spectral_weighting(c, rho=10.0, concept_ids=alone).square().sum(dim=1)  # phi per direction
    assert float(weights.min()) >= 10.0 / 11.0 - 1e-12
    # the same rows read as three concepts of one row each: the strong directions now exceed one concept's energy
    three = spectral_weighting(c, rho=10.0, concept_ids=torch.arange(len(c))).square().sum(dim=1)
    assert float(three.min()) < float(weights.min())


def test_concept_ids_of_the_wrong_length_or_kind_are_refused(problem):
    w, c, a, p = problem.values()
    with pytest.raises(InvalidInputError, match="one concept .* per concept token row"):
        spectral_weighting(c, rho=1.0, concept_ids=torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match="one concept .* per concept token row"):
        compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(mode="uce"), concept_ids=torch.tensor([0.0, 1.0, 2.0]))


def test_spectral_form_equals_its_weighted_least_squares(problem):
    w, c, a, p = problem.values()
    weighting = spectral_weighting(c, rho=0.5)
    expected = stacked_lstsq(w, c, a, p, lam=0.7, gamma=0.3, weighting=weighting)
    assert relative_error(closed_form_delta(w, c, a, p, 0.7, 0.3, weighting), expected) < 1e-10
    settings = ScaPreSettings(preserve_weight=0.7, ridge=0.3, spectral_rho=0.5, **{**OFF, "spectral": True})
    edit = compute_edit({"x.to_k": w}, c, a, p, settings)
    assert relative_error(edit.delta("x.to_k").double(), expected) < 1e-5


def test_sylvester_equals_dense_kron_solve():
    g = torch.Generator().manual_seed(1)
    root_b, root_a = torch.randn(5, 5, generator=g), torch.randn(4, 4, generator=g)
    b = (root_b @ root_b.T).double()  # PSD
    a = (root_a @ root_a.T + 0.1 * torch.eye(4)).double()  # PD
    c = torch.randn(5, 4, generator=g).double()
    # column-major vec: vec(B X) = (I (x) B) vec X, vec(X A) = (A^T (x) I) vec X
    operator = torch.kron(torch.eye(4, dtype=b.dtype), b) + torch.kron(a.T.contiguous(), torch.eye(5, dtype=b.dtype))
    expected = torch.linalg.lstsq(operator, c.T.reshape(-1, 1)).solution.reshape(4, 5).T
    assert relative_error(solve_sylvester(b, a, c), expected) < 1e-8


def test_sylvester_path_solves_the_regularised_normal_equations(problem):
    w, c, a, p = problem.values()
    settings = ScaPreSettings(preserve_weight=0.7, ridge=0.3, output_reg=2.0, **OFF)
    delta = compute_edit({"x.to_k": w}, c, a, p, settings).delta("x.to_k").double()
    system = build_system(c, a, p, 0.7, 0.3)
    b = 2.0 * output_gram(w, p)
    residual = b @ delta + delta @ system.gram - system.rhs(w)
    assert float(residual.norm() / system.rhs(w).norm()) < 1e-5
    # with B = 0 the Sylvester form is the plain closed form
    zero = torch.zeros(6, 6, dtype=torch.float64)
    torch.testing.assert_close(
        solve_sylvester(zero, system.gram, system.rhs(w)), closed_form_delta(w, c, a, p, 0.7, 0.3)
    )


def test_mutual_information_by_hand():
    responses = torch.tensor([[3.0, 2.0, -1.0, -2.0], [1.0, -1.0, 1.0, -1.0]])
    labels = torch.tensor([1, 1, 0, 0])
    # row 0: bit = label -> I = log 2; row 1: bit independent of label -> I = 0
    torch.testing.assert_close(row_mutual_information(responses, labels), torch.tensor([math.log(2), 0.0]))
    # z-scores +1 / -1, sigmoid, power 2
    expected = torch.sigmoid(torch.tensor([1.0, -1.0])) ** 2
    torch.testing.assert_close(soft_row_mask(torch.tensor([math.log(2), 0.0]), 2.0), expected)
    torch.testing.assert_close(soft_row_mask(torch.zeros(3), 3.0), torch.full((3,), 0.125))
    # the release's temperature T = 0.7 sharpens the sigmoid: sigmoid(z / T)^p
    sharp = torch.sigmoid(torch.tensor([1.0, -1.0]) / 0.7) ** 2
    torch.testing.assert_close(soft_row_mask(torch.tensor([math.log(2), 0.0]), 2.0, 0.7), sharp)


def test_masked_targets_equal_least_squares(problem):
    """The "target" form: each row's target scaled by its mask; golden against lstsq."""
    w, c, a, p = problem.values()
    g = torch.Generator().manual_seed(7)
    scale = torch.rand(6, 3, generator=g, dtype=torch.float64)
    expected = stacked_lstsq(w, c, a, p, lam=0.7, gamma=0.3, target_scale=scale)
    assert relative_error(closed_form_delta(w, c, a, p, 0.7, 0.3, target_scale=scale), expected) < 1e-10
    # with the spectral weighting too
    t = spectral_weighting(c, rho=0.5)
    weighted = stacked_lstsq(w, c, a, p, lam=0.7, gamma=0.3, weighting=t, target_scale=scale)
    assert relative_error(closed_form_delta(w, c, a, p, 0.7, 0.3, t, target_scale=scale), weighted) < 1e-10
    # and through compute_edit, with the masks it computes itself
    owners = torch.tensor([0, 0, 1])
    empty = torch.randn(3, 10, generator=g, dtype=torch.float64)
    masks = concept_row_masks(w, c, empty, owners, power=2.0, temperature=0.7)
    settings = ScaPreSettings(preserve_weight=0.7, ridge=0.3, **{**OFF, "row_mask": True})
    edit = compute_edit({"x.to_k": w}, c, a, p, settings, empty_tokens=empty, concept_ids=owners)
    expected = stacked_lstsq(w, c, a, p, lam=0.7, gamma=0.3, target_scale=masks[owners].T)
    assert relative_error(edit.delta("x.to_k").double(), expected) < 1e-5


# --- the switches ----------------------------------------------------------------------------


def test_uce_maps_concepts_onto_the_anchor_outputs(problem):
    w, c, a, _ = problem.values()
    edit = compute_edit({"x.to_v": w}, c, a, None, ScaPreSettings(mode="uce", preserve_weight=0.0, ridge=1e-9))
    edited = edit.edited_weight("x.to_v", w)
    assert relative_error(c @ edited.T, a @ w.T) < 1e-5


def concept_row_problem():
    """Rows 0 and 1 read a direction u that concept tokens have (+3u) and empty tokens lack (-3u)."""
    g = torch.Generator().manual_seed(2)
    u = torch.zeros(12, dtype=torch.float64)
    u[0] = 1.0
    w = 0.3 * torch.randn(16, 12, generator=g, dtype=torch.float64)
    w[:, 0] = 0.0
    w[:2, 0] = 5.0
    noise = lambda n: 0.5 * torch.randn(n, 12, generator=g, dtype=torch.float64)  # noqa: E731
    return w, 3 * u + noise(8), -3 * u + noise(8)


def test_row_mask_confines_the_update_to_concept_rows():
    w, concepts, empty = concept_row_problem()
    mask = information_row_mask(w, concepts, empty, power=16.0)
    assert mask[:2].min() > 1e3 * mask[2:].max()
    base = ScaPreSettings(ridge=0.1, **OFF)
    masked = ScaPreSettings(ridge=0.1, mask_power=16.0, mask_form="confine", **{**OFF, "row_mask": True})
    plain = compute_edit({"x.to_k": w}, concepts, empty, None, base).delta("x.to_k")
    confined = compute_edit({"x.to_k": w}, concepts, empty, None, masked, empty_tokens=empty).delta("x.to_k")
    assert plain[2:].norm() > 0.1 * plain[:2].norm()  # unmasked, every row moves
    assert confined[2:].norm() < 1e-3 * confined[:2].norm()


def test_target_mask_erases_in_concept_rows_and_silences_the_rest():
    """The release's form: informative rows map the concept onto the anchor's output, the others toward 0."""
    w, concepts, empty = concept_row_problem()
    anchors = empty  # the anchor is the empty prompt here
    settings = ScaPreSettings(ridge=1e-9, preserve_weight=0.0, mask_power=16.0, **{**OFF, "row_mask": True})
    edit = compute_edit({"x.to_v": w}, concepts, anchors, None, settings, empty_tokens=empty)
    out = concepts @ edit.edited_weight("x.to_v", w).T.double()
    target = anchors @ w.T
    mask = information_row_mask(w, concepts, empty, power=16.0, temperature=0.7)
    assert mask[:2].min() > 1e3 * mask[2:].max()
    # eight independent concept rows, no ridge: each row's output is exactly its scaled target
    assert relative_error(out, target * mask) < 1e-4
    assert out[:, 2:].norm() < 1e-3 * target[:, 2:].norm()  # mask ~0: the concept is silenced there


def test_each_concept_gets_its_own_mask():
    """Concept 0 is read by rows 0-1, concept 1 by rows 2-3: their masks differ accordingly."""
    g = torch.Generator().manual_seed(8)
    w = 0.3 * torch.randn(16, 12, generator=g, dtype=torch.float64)
    w[:, :2] = 0.0
    w[:2, 0] = w[2:4, 1] = 5.0
    noise = lambda n: 0.5 * torch.randn(n, 12, generator=g, dtype=torch.float64)  # noqa: E731
    axis = torch.eye(12, dtype=torch.float64)
    concepts = torch.cat([3 * axis[0] + noise(8), 3 * axis[1] + noise(8)])
    empty = torch.cat([-3 * axis[0] + noise(8), -3 * axis[1] + noise(8)])
    masks = concept_row_masks(w, concepts, empty, torch.tensor([0] * 8 + [1] * 8), power=16.0, temperature=1.0)
    assert masks[0, :2].min() > 1e3 * masks[0, 2:].max()
    assert masks[1, 2:4].min() > 1e3 * torch.cat([masks[1, :2], masks[1, 4:]]).max()


def test_rows_with_mask_zero_stay_exactly_unchanged():
    w, concepts, empty = concept_row_problem()
    system = build_system(concepts, empty, None, 0.0, 0.1)
    forced = torch.zeros(16, dtype=torch.float64)
    forced[:2] = 1.0
    delta = LayerDelta.low_rank(system.up(w), system.down).scale_rows(forced)
    edited = w + delta.to_dense()
    assert torch.equal(edited[2:], w[2:]) and not torch.equal(edited[:2], w[:2])


def test_spectral_weighting_reduces_the_update_along_a_shared_direction():
    g = torch.Generator().manual_seed(3)
    shared = torch.zeros(12, dtype=torch.float64)
    shared[0] = 1.0
    concepts = 4 * shared + 0.3 * torch.randn(10, 12, generator=g, dtype=torch.float64)  # ten concepts share it
    concepts[:, 0] = 4.0
    anchors = torch.randn(10, 12, generator=g, dtype=torch.float64)
    preserve = shared + 0.01 * torch.randn(3, 12, generator=g, dtype=torch.float64)  # preserve tokens use it too
    w = torch.randn(8, 12, generator=g, dtype=torch.float64)
    plain = ScaPreSettings(preserve_weight=5.0, ridge=0.1, **OFF)
    spectral = ScaPreSettings(preserve_weight=5.0, ridge=0.1, spectral_rho=0.5, **{**OFF, "spectral": True})
    along_plain = compute_edit({"x.to_k": w}, concepts, anchors, preserve, plain).delta("x.to_k") @ shared.float()
    along_spectral = compute_edit({"x.to_k": w}, concepts, anchors, preserve, spectral).delta("x.to_k") @ shared.float()
    assert along_spectral.norm() < 0.8 * along_plain.norm()


def test_release_spectral_step_equals_its_dense_formula(problem):
    """D = closed form - scale W (P C)(P C)^T M^-1, with P gating out the leading directions."""
    w, c, a, p = problem.values()
    u, sigma, _ = torch.linalg.svd(c.T, full_matrices=False)
    gate = torch.sigmoid((sigma - sigma.median()) / 0.5) ** 2
    projector = torch.eye(10, dtype=torch.float64) - u @ torch.diag(gate) @ u.T
    torch.testing.assert_close(release_residual(c, 0.5, 2.0), (projector @ c.T).T)
    m = c.T @ c + 0.7 * p.T @ p + 0.3 * torch.eye(10, dtype=torch.float64)
    pc = projector @ c.T
    extra = -1.5 * w @ pc @ torch.linalg.solve(m, pc).T
    expected = closed_form_delta(w, c, a, p, 0.7, 0.3) + extra
    settings = ScaPreSettings(
        preserve_weight=0.7,
        ridge=0.3,
        spectral_form="release",
        spectral_temperature=0.5,
        spectral_power=2.0,
        spectral_scale=1.5,
        **{**OFF, "spectral": True},
    )
    edit = compute_edit({"x.to_k": w}, c, a, p, settings)
    assert relative_error(edit.delta("x.to_k").double(), expected) < 1e-5
    # the term works against the original response to the concepts' residual part:
    # <W PC, -s W PC G> = -s tr(PC^T W^T W PC G) <= 0 with G = (PC)^T M^-1 PC positive semidefinite
    plain = compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(preserve_weight=0.7, ridge=0.3, **OFF))
    added = (edit.delta("x.to_k") - plain.delta("x.to_k")).double()
    assert float(((added @ pc) * (w @ pc)).sum()) < 0


def test_bures_step_moves_rows_toward_the_original(problem):
    w = problem["w"]
    g = torch.Generator().manual_seed(4)
    raw = LayerDelta.low_rank(torch.randn(6, 2, generator=g, dtype=torch.float64), problem["c"][:2])
    raw = raw.add_rows(torch.tensor([5]), -2.5, w[5:6])  # row 5 flips: w' = -1.5 w + ...
    stepped, flipped = bures_step(raw, w, eta=0.5)
    assert flipped >= 1
    edited = w + raw.to_dense()
    # the factored step equals the dense proximal formula, row by row
    torch.testing.assert_close(w + stepped.to_dense(), bures_proximal(edited, w, 0.5))
    after = w + stepped.to_dense()
    assert bool((bures_distance(after, w) <= bures_distance(edited, w) + 1e-12).all())
    assert bures_distance(after, w).sum() < bures_distance(edited, w).sum()
    assert stepped.rank == raw.rank + flipped  # sign flips add one rank each, the rest stays low rank


def test_release_bures_step_by_hand():
    w0 = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    edited = torch.tensor([[6.0, 0.0], [5.0, 0.0], [-4.0, 0.0]], dtype=torch.float64)
    lam, mu = 0.5, 0.25
    out = release_bures(edited, w0, mu, lam, iters=1)
    # row 0 keeps its direction (kappa = 1): radius (0.5 * 6 + 0.25 * 3) / 0.75 = 5
    # rows 1 and 2 are orthogonal / opposite (kappa = 0): the length shrinks to lam / (lam + mu) = 2/3
    expected = torch.tensor([[5.0, 0.0], [10 / 3, 0.0], [-8 / 3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    # a second iteration reads kappa from the new direction: row 0 is already aligned, so unchanged
    torch.testing.assert_close(release_bures(edited, w0, mu, lam, iters=2)[0], expected[0])
    torch.testing.assert_close(release_bures(edited, w0, 0.0, 0.0, iters=1), edited)


def test_release_bures_in_compute_edit_uses_the_mean_row_entropy(problem):
    w, c, a, p = problem.values()
    without = compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(**OFF))
    settings = ScaPreSettings(bures_form="release", **{**OFF, "bures": True})
    edit = compute_edit({"x.to_k": w}, c, a, p, settings)
    mu = float(row_response_entropy(w, c, settings.entropy_bins).mean())
    assert edit.metadata["layer_stats"]["x.to_k"]["bures_mu"] == pytest.approx(mu)
    expected = release_bures(w + without.delta("x.to_k").double(), w, mu, settings.ridge, 1) - w
    torch.testing.assert_close(edit.delta("x.to_k").double(), expected, rtol=1e-5, atol=1e-6)


def test_proximal_step_minimises_its_objective():
    g = torch.Generator().manual_seed(5)
    w, edited = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    best = bures_proximal(edited, w, 0.7)
    objective = lambda x: (x - edited).square().sum() + 0.7 * bures_distance(x, w).square().sum()  # noqa: E731
    for _ in range(50):
        assert objective(best) <= objective(best + 0.05 * torch.randn(1, 4, generator=g)) + 1e-6


def test_row_response_entropy_by_hand():
    # row 0: all responses equal -> one bin -> H = 0; row 1: one response per bin of 4 -> H = 1;
    # row 2: two bins of two -> H = log 2 / log 4 = 1/2
    concepts = torch.eye(4, dtype=torch.float64)
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 3.0, 3.0]], dtype=torch.float64)
    entropy = row_response_entropy(w, concepts, bins=4)
    torch.testing.assert_close(entropy, torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
    # the release's retention: alpha = floor + (1 - floor) (1 - H)
    torch.testing.assert_close(blend_factors(entropy, 0.8), torch.tensor([1.0, 0.8, 0.9], dtype=torch.float64))


def test_entropy_blend_scales_each_row_toward_the_original(problem):
    w, c, a, p = problem.values()
    without = compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(**OFF))
    settings = ScaPreSettings(**{**OFF, "entropy_blend": True})
    blended = compute_edit({"x.to_k": w}, c, a, p, settings)
    alpha = blend_factors(row_response_entropy(w, c, settings.entropy_bins), settings.blend_floor).float()
    assert bool((alpha >= 0.8).all()) and bool((alpha <= 1.0).all()) and float(alpha.min()) < 1.0
    torch.testing.assert_close(blended.delta("x.to_k"), alpha[:, None] * without.delta("x.to_k"))
    floor_one = compute_edit(
        {"x.to_k": w}, c, a, p, ScaPreSettings(**{**OFF, "entropy_blend": True, "blend_floor": 1.0})
    )
    torch.testing.assert_close(floor_one.delta("x.to_k"), without.delta("x.to_k"))


def test_uce_mode_ignores_the_switches(problem):
    w, c, a, p = problem.values()
    uce = compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(mode="uce"))
    off = compute_edit({"x.to_k": w}, c, a, p, ScaPreSettings(**OFF))
    torch.testing.assert_close(uce.delta("x.to_k"), off.delta("x.to_k"))
    assert not any(uce.metadata["active"].values())
