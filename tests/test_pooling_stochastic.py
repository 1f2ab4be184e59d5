"""Random pooling methods: sampling distributions, sharing of draws, gradients, seeding."""

from __future__ import annotations

import math

import pytest
import torch

import pooling_contract as contract
from poolbench.pooling import available_pools, create_pool

RANDOM_IN_TRAINING = [name for name in available_pools() if contract.random_in_training(name)]

# ---------------------------------------------------------------- stochastic (Zeiler & Fergus)


def repeated_window(window, copies):
    """``copies`` samples of one 2x2 window (one channel): one draw per sample."""
    return torch.tensor(window, dtype=torch.float32).view(1, 1, 2, 2).repeat(copies, 1, 1, 1)


def test_stochastic_training_picks_cells_with_probability_proportional_to_activation():
    torch.manual_seed(0)
    n = 40000
    # cells 1 and 3 have p = 1/4 and 3/4; 0 and -2 have probability 0
    x = repeated_window([[1.0, 3.0], [0.0, -2.0]], n)
    y = create_pool("stochastic", 1, 2).train()(x).view(-1)
    freq = {v: (y == v).float().mean().item() for v in (1.0, 3.0, 0.0, -2.0)}
    assert freq[0.0] == 0 and freq[-2.0] == 0, "a zero-probability cell was picked"
    assert (y == 1.0).sum() + (y == 3.0).sum() == n
    se = math.sqrt(0.25 * 0.75 / n)
    assert abs(freq[1.0] - 0.25) < 5 * se and abs(freq[3.0] - 0.75) < 5 * se


def test_stochastic_training_frequencies_over_a_3x3_window():
    torch.manual_seed(1)
    n = 30000
    vals = torch.tensor([0.5, 0.0, 2.0, -1.0, 1.5, 0.0, 1.0, -3.0, 3.0])  # sum of positives 8
    x = vals.view(1, 1, 3, 3).repeat(n, 1, 1, 1)
    y = create_pool("stochastic", 1, 3).train()(x).view(-1)
    for v in vals.unique().tolist():
        p = max(v, 0.0) / 8.0
        f = (y == v).float().mean().item()
        if p == 0:
            assert f == 0, f"cell {v} has probability 0 but was picked"
        else:
            assert abs(f - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-9, (v, f, p)


def test_stochastic_training_all_nonpositive_window_is_uniform_over_real_cells():
    torch.manual_seed(2)
    n = 20000
    # 3x3 input, kernel 2, stride 2, padding 1: the top-left window holds one real cell
    # (-1); the top-right window holds two real cells and two padded ones.
    base = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0], [-7.0, -8.0, -9.0]])
    x = base.view(1, 1, 3, 3).repeat(n, 1, 1, 1)
    y = create_pool("stochastic", 1, 2, 2, 1).train()(x)
    assert y.shape[-2:] == (2, 2)
    assert (y[:, 0, 0, 0] == -1.0).all()
    tr = y[:, 0, 0, 1]  # window of real cells -2, -3
    assert ((tr == -2.0) | (tr == -3.0)).all(), "a padded cell (0) was picked"
    assert abs((tr == -2.0).float().mean().item() - 0.5) < 0.03
    br = y[:, 0, 1, 1]  # real cells -5, -6, -8, -9
    assert torch.isin(br, torch.tensor([-5.0, -6.0, -8.0, -9.0])).all()
    for v in (-5.0, -6.0, -8.0, -9.0):
        assert abs((br == v).float().mean().item() - 0.25) < 0.03


def test_stochastic_training_never_picks_padding_next_to_positive_cells(ref):
    torch.manual_seed(3)
    x = torch.randn(64, 3, 7, 7)
    for k, s, p, ceil in ((3, 2, 1, False), (3, 2, 1, True), (2, 2, 0, True), (2, 2, 1, True)):
        layer = create_pool("stochastic", 3, k, s, p, ceil).train()
        y = layer(x)
        ok = ref.values_in_window(y, x, k, s, p, ceil)
        assert ok.all()
        # and never a non-positive cell where the window has a positive one
        has_pos = ref.window_reduce(x, ref.ref_max, k, s, p, ceil) > 0
        assert (y[has_pos] > 0).all()


def test_stochastic_training_gradient_flows_to_the_picked_cell_only():
    torch.manual_seed(4)
    x = torch.rand(2, 2, 4, 4, requires_grad=True)
    y = create_pool("stochastic", 2, 2).train()(x)
    y.sum().backward()
    g = x.grad.view(2, 2, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 2, 2, 2, 4)
    assert ((g == 1).sum(-1) == 1).all() and ((g == 0).sum(-1) == 3).all()


# ---------------------------------------------------------------- stochastic_mix


def lambdas_from(layer, n, c, h=4, w=4):
    """Recover the per-window weight of max: windows [[1, 0], [0, 0]] have m=1, mean=1/4."""
    x = torch.zeros(n, c, h, w)
    x[:, :, ::2, ::2] = 1.0
    y = layer(x)
    return (y - 0.25) / 0.75


@pytest.mark.parametrize("theta,concentration", [(1.0, 4.0), (-0.7, 10.0), (0.0, 2.0)])
def test_stochastic_mix_samples_have_mean_sigmoid_theta(theta, concentration):
    torch.manual_seed(5)
    layer = create_pool("stochastic_mix", 8, 2, concentration=concentration).train()
    with torch.no_grad():
        layer.theta.fill_(theta)
    lam = lambdas_from(layer, 1000, 8)[:, :, 0, 0].reshape(-1)
    mu = 1 / (1 + math.exp(-theta))
    var = mu * (1 - mu) / (concentration + 1)  # variance of Beta(k mu, k (1 - mu))
    n = lam.numel()
    assert ((lam > 0) & (lam < 1)).all()
    assert abs(lam.mean().item() - mu) < 5 * math.sqrt(var / n)
    assert abs(lam.var().item() - var) < 0.1 * var


def test_stochastic_mix_per_channel_theta():
    torch.manual_seed(6)
    layer = create_pool("stochastic_mix", 3, 2, per_channel=True).train()
    theta = torch.tensor([-1.5, 0.0, 2.0])
    with torch.no_grad():
        layer.theta.copy_(theta)
    lam = lambdas_from(layer, 6000, 3)[:, :, 0, 0]
    torch.testing.assert_close(lam.mean(0), torch.sigmoid(theta), rtol=0, atol=0.015)


@pytest.mark.parametrize("per", ["sample_channel", "sample", "channel", "batch", None])
def test_stochastic_mix_sample_per(per):
    torch.manual_seed(7)
    kw = {} if per is None else {"sample_per": per}
    per = per or "sample_channel"  # the default
    layer = create_pool("stochastic_mix", 5, 2, **kw).train()
    lam = lambdas_from(layer, 6, 5)
    # one draw per (sample, channel) at most: constant over the spatial positions
    assert torch.allclose(lam, lam[:, :, :1, :1].expand_as(lam), atol=1e-6)
    lam = lam[:, :, 0, 0]
    varies_n = not torch.allclose(lam, lam[:1].expand_as(lam), atol=1e-6)
    varies_c = not torch.allclose(lam, lam[:, :1].expand_as(lam), atol=1e-6)
    assert varies_n == (per in ("sample_channel", "sample")), per
    assert varies_c == (per in ("sample_channel", "channel")), per


def test_stochastic_mix_theta_gets_gradient_in_training():
    torch.manual_seed(8)
    for per_channel in (False, True):
        layer = create_pool("stochastic_mix", 4, 2, per_channel=per_channel).train()
        with torch.no_grad():
            layer.theta.fill_(0.3)
        y = layer(torch.randn(4, 4, 6, 6))
        (y * torch.randn_like(y)).sum().backward()
        assert layer.theta.grad is not None
        assert torch.isfinite(layer.theta.grad).all() and (layer.theta.grad != 0).all()


def test_stochastic_mix_theta_gradient_sign():
    """Where max > mean everywhere, increasing theta increases the expected output."""
    torch.manual_seed(9)
    layer = create_pool("stochastic_mix", 1, 2).train()
    x = torch.zeros(2000, 1, 2, 2)
    x[:, :, 0, 0] = 1.0
    layer(x).sum().backward()
    assert layer.theta.grad.item() > 0


def test_stochastic_mix_eval_is_deterministic():
    layer = create_pool("stochastic_mix", 3, 2).eval()
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("theta", [25.0, -25.0, 200.0, -200.0])
def test_stochastic_mix_training_survives_a_saturated_theta(theta):
    """sigmoid(theta) rounds to exactly 1 (or 0) in fp32 for large |theta|; sampling must
    still work (Beta(k mu, k (1 - mu)) with a zero concentration is invalid) and give ~max
    (or ~mean)."""
    torch.manual_seed(10)
    layer = create_pool("stochastic_mix", 2, 2).train()
    with torch.no_grad():
        layer.theta.fill_(theta)
    lam = lambdas_from(layer, 64, 2)
    assert torch.isfinite(lam).all()
    target = 1.0 if theta > 0 else 0.0
    assert (lam - target).abs().max() < 1e-3
    y = layer(torch.randn(4, 2, 6, 6, requires_grad=True))
    y.sum().backward()
    assert torch.isfinite(layer.theta.grad).all()


# ---------------------------------------------------------------- mixed (Yu et al.)


def mixed_lambdas(layer, n, c):
    x = torch.zeros(n, c, 4, 4)
    x[:, :, ::2, ::2] = 1.0
    return ((layer(x) - 0.25) / 0.75)


@pytest.mark.parametrize("per", ["batch", "sample", "channel", "sample_channel"])
def test_mixed_training_draws_max_or_avg_per_sample_per(per):
    torch.manual_seed(11)
    layer = create_pool("mixed", 6, 2, p_max=0.3, sample_per=per).train()
    draws = []
    for _ in range(200 if per == "batch" else 10):
        lam = mixed_lambdas(layer, 8, 6)
        assert ((lam.abs() < 1e-6) | ((lam - 1).abs() < 1e-6)).all(), "lambda not in {0, 1}"
        assert torch.allclose(lam, lam[:, :, :1, :1].expand_as(lam))
        lam = lam[:, :, 0, 0]
        varies_n = not torch.equal(lam, lam[:1].expand_as(lam))
        varies_c = not torch.equal(lam, lam[:, :1].expand_as(lam))
        if per in ("batch", "channel"):
            assert not varies_n
        if per in ("batch", "sample"):
            assert not varies_c
        draws.append(lam.round())
    d = torch.stack(draws)
    freq = d.mean().item()
    assert abs(freq - 0.3) < 0.08, freq
    if per == "sample_channel":  # both vary (with overwhelming probability)
        assert d.std(1).mean() > 0 and d.std(2).mean() > 0


def test_mixed_default_is_one_draw_per_forward():
    assert create_pool("mixed", 4).sample_per == "batch"


# ---------------------------------------------------------------- seeding


def test_the_random_methods_are_found_by_running_them():
    """contract.random_in_training finds the random methods (and only them) without a list:
    the tests that run training mode for them then cover a new random method too."""
    assert {"stochastic", "stochastic_mix", "mixed", "fractional_max"} <= set(RANDOM_IN_TRAINING)
    for name in ("max", "avg", "tmaxavg", "softpool", "channel_adaptive", "gated", "lp"):
        assert name not in RANDOM_IN_TRAINING


@pytest.mark.parametrize("name", RANDOM_IN_TRAINING)
def test_random_methods_follow_torch_manual_seed(name):
    layer = create_pool(name, 4, 3, 2, 1).train()
    x = torch.randn(4, 4, 11, 11)
    torch.manual_seed(123)
    a = layer(x)
    torch.manual_seed(123)
    b = layer(x)
    assert torch.equal(a, b)
    outs = [layer(x) for _ in range(5)]
    assert any(not torch.equal(a, o) for o in outs), "training draws never changed"
