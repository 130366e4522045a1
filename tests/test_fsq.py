"""FSQ invariants, and the tests that pin each departure from the seed paper."""

import math

import numpy as np
import pytest
import torch

from fsqdeploy import FSQ, FSQDeployError, ResidualFSQ
from fsqdeploy.fsq import decision_thresholds, level_centres, parse_levels, round_ste

LEVELS = [3, 4, 5, 7, 8, 16]


def sweep(dim: int, lo: float = -30.0, hi: float = 30.0, n: int = 200_001) -> torch.Tensor:
    return torch.linspace(lo, hi, n).unsqueeze(1).repeat(1, dim)


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_indices_cover_exactly_the_levels(temperature):
    q = FSQ(LEVELS)
    q.temperature.fill_(temperature)
    for mode in (True, False):
        q.train(mode)
        idx = q(sweep(len(LEVELS)) * temperature).indices
        for d, L in enumerate(LEVELS):
            assert idx[:, d].unique().tolist() == list(range(L)), (mode, L)


def test_codes_round_trip_through_indices():
    q = FSQ(LEVELS).eval()
    idx = torch.stack([torch.randint(0, L, (1000,)) for L in LEVELS], dim=1)
    codes = q.indices_to_codes(idx)
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(q.codes_to_indices(codes), idx)


def test_zero_maps_to_the_middle_code_for_every_level():
    # departure 1: with atanh and 1 + eps the shift is exact, so bound(0) == 0 (code 0)
    q = FSQ(LEVELS)
    assert torch.allclose(q.bound(torch.zeros(1, len(LEVELS))), torch.zeros(1, len(LEVELS)), atol=1e-6)
    assert torch.equal(q.eval()(torch.zeros(1, len(LEVELS))).codes, torch.zeros(1, len(LEVELS)))


def test_straight_through_gradient_is_identity_through_round():
    x = torch.linspace(-3, 3, 101, requires_grad=True)
    round_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert torch.equal(round_ste(torch.tensor([0.5, 1.5, 2.5, -0.5])), torch.tensor([0.0, 2.0, 2.0, -0.0]))


def test_quantize_passes_gradient_of_the_bound():
    q = FSQ([8, 5])
    z = torch.randn(64, 2, requires_grad=True)
    q.quantize(z).sum().backward()
    # d/dz tanh(z/T + s) * half_l / half_width: positive and equal to the bound's derivative
    zb = z.detach().clone().requires_grad_(True)
    (q.bound(zb) / q.half_width).sum().backward()
    assert torch.allclose(z.grad, zb.grad) and bool((z.grad > 0).all())


def test_paper_eq6_bound_gives_one_level_too_many_for_even_L():
    z = sweep(1)[:, 0]
    for L in (4, 8):
        paper = torch.round(math.floor(L / 2) * torch.tanh(z))
        assert len(paper.unique()) == L + 1  # the paper's eq. 6: L + 1 values for even L
        ours = FSQ([L]).eval()(z.unsqueeze(1)).indices
        assert len(ours.unique()) == L
    for L in (3, 5):  # odd L is fine in both
        assert len(torch.round(math.floor(L / 2) * torch.tanh(z)).unique()) == L


def test_paper_eq7_passes_no_gradient():
    z = torch.randn(32, 4, requires_grad=True)
    temperature = 0.5
    zb = 4 * torch.tanh(z / temperature)
    paper = torch.round(zb / temperature) * temperature + (z - zb).detach()  # the paper's eq. 7
    paper.sum().backward()  # round has zero gradient and the other term is detached
    assert torch.equal(z.grad, torch.zeros_like(z))
    z.grad = None
    ours = FSQ([8] * 4).quantize(z)
    ours.sum().backward()
    assert z.grad is not None and bool((z.grad.abs() > 0).all())


def test_thresholds_agree_with_tanh_round_away_from_boundaries():
    # departure 3: inference by thresholds equals round(bound(z)) except within ulps of a threshold
    q = FSQ(LEVELS)
    q.temperature.fill_(0.1)
    z = sweep(len(LEVELS), -3, 3)
    by_round = (torch.round(q.bound(z)) + q.half_width).long()
    by_threshold = q.indices_from_latent(z)
    thresholds = torch.from_numpy(decision_thresholds(LEVELS, 0.1))
    gap = (z.unsqueeze(-1) - thresholds).abs().amin(-1)
    differ = by_round != by_threshold
    assert bool((gap[differ] < 1e-5).all())
    assert differ.float().mean() < 1e-4


def test_thresholds_place_the_boundary_at_half_integers():
    for L in LEVELS:
        q = FSQ([L])
        q.temperature.fill_(0.3)
        temperature = float(q.temperature)  # the float32 value the module uses
        t = decision_thresholds([L], temperature)[0].astype(np.float64)
        bounded = q.bound(torch.from_numpy(t).unsqueeze(1).double()).squeeze(1).numpy()
        expected = np.arange(L - 1) - L // 2 + 0.5
        assert np.allclose(bounded, expected, atol=1e-5)
        # and one float32 step either side of each threshold lands on each side of it
        t32 = decision_thresholds([L], temperature)[0]
        below = np.nextafter(t32, np.float32(-np.inf))
        q.eval()
        assert q(torch.from_numpy(t32).unsqueeze(1)).indices.squeeze(1).tolist() == list(range(1, L))
        assert q(torch.from_numpy(below).unsqueeze(1)).indices.squeeze(1).tolist() == list(range(0, L - 1))


def test_level_centres_are_exact_codes():
    q = FSQ([5, 8])
    q.temperature.fill_(0.2)
    centres = torch.from_numpy(level_centres([5, 8], 0.2))
    for d, L in enumerate([5, 8]):
        idx = q.eval().indices_from_latent(centres[d, :L].unsqueeze(1).repeat(1, 2))[:, d]
        assert idx.tolist() == list(range(L))


def test_padding_thresholds_never_fire():
    t = decision_thresholds([3, 8], 1.0)
    assert np.isinf(t[0, 2:]).all() and np.isfinite(t[1]).all()


def test_codebook_size_is_exact():
    assert FSQ([8, 5, 5, 5]).codebook_size == 1000
    assert FSQ([8] * 64).codebook_size == 2**192


def test_ema_statistics_follow_eqs_8_to_10():
    q = FSQ([3]).train()
    q.ema_decay = 0.5
    z = torch.tensor([[-10.0], [0.0], [0.0], [10.0]])
    q(z)
    assert torch.allclose(q.ema_counts, torch.tensor([[0.5, 1.0, 0.5]]))
    means = q.ema_level_means()
    assert means[0, 1].abs() < 1e-6 and means[0, 0] < -0.99 and means[0, 2] > 0.99


@pytest.mark.parametrize(
    "spec,width,expected",
    [("8", 4, [8, 8, 8, 8]), ("8,5", 4, [8, 5, 8, 5]), ([3, 4], 2, [3, 4]), (" 7 , 5 ", 2, [7, 5])],
)
def test_parse_levels(spec, width, expected):
    assert parse_levels(spec, width) == expected


@pytest.mark.parametrize(
    "spec,match",
    [("8,x", "not a comma-separated"), ("1", "out of range"), ("8,5,5", "does not divide"), ("", "not a comma")],
)
def test_parse_levels_errors(spec, match):
    with pytest.raises(FSQDeployError, match=match):
        parse_levels(spec, 64)


def test_residual_stages_concatenate_indices_and_refine():
    torch.manual_seed(0)
    one = ResidualFSQ([8] * 16, stages=1).eval()
    two = ResidualFSQ([8] * 32, stages=2).eval()
    for q in (one, two):
        q.set_temperature(0.5)
    z = torch.randn(512, 16) * 0.3
    idx = two.indices(z)
    assert idx.shape == (512, 32)
    assert torch.equal(idx[:, :16], one.indices(z))  # stage 1 is plain FSQ
    # the training and inference paths give the same indices and decoder input
    mixed, outs = two(z)
    assert torch.equal(torch.cat([o.indices for o in outs], 1), idx)
    assert torch.allclose(mixed, two.indices_to_decoder_input(idx))
    # a second stage resolves the latent more finely: residual after stage 2 is smaller
    s1, s2 = two.stages
    c1 = s1.centres(idx[:, :16])
    r1 = z - c1
    r2 = r1 - s2.centres(idx[:, 16:]) / 8
    assert r2.abs().mean() < r1.abs().mean()
