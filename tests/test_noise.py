import numpy as np
import pytest

from rbe_jax import NoiseSchedule


def test_linear_matches_ddpm_definition():
    ns = NoiseSchedule.linear(1000)
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(ns.alpha_bar, np.cumprod(1 - betas), rtol=1e-15)
    assert ns.alpha_bar[0] == pytest.approx(1 - 1e-4)
    assert np.array_equal(ns.timesteps, np.arange(1000))
    assert len(ns) == ns.num_train_timesteps == 1000


def test_cosine_is_decreasing_and_near_one_at_start():
    ns = NoiseSchedule.cosine(1000)
    assert np.all(np.diff(ns.alpha_bar) < 0)
    assert 0.999 < ns.alpha_bar[0] < 1
    assert ns.alpha_bar[-1] < 1e-4


def test_respace_is_improved_diffusion_single_section():
    ns = NoiseSchedule.linear(1000)
    g = ns.respace(100)
    # improved-diffusion: stride (1000 - 1) / (100 - 1), positions rounded, ends included
    stride = 999 / 99
    want, pos = [], 0.0
    for _ in range(100):
        want.append(round(pos))
        pos += stride
    assert g.timesteps.tolist() == want
    assert g.timesteps[0] == 0 and g.timesteps[-1] == 999
    np.testing.assert_array_equal(g.alpha_bar, ns.alpha_bar[want])
    assert g.num_train_timesteps == 1000 and g.K == 100
    # respacing a full schedule to itself is the identity
    assert ns.respace(1000) == ns


def test_log_snr_alpha_sigma():
    g = NoiseSchedule.linear(1000).respace(10)
    np.testing.assert_allclose(g.alpha**2 + g.sigma**2, 1.0, rtol=1e-14)
    np.testing.assert_allclose(g.log_snr, np.log(g.alpha / g.sigma), rtol=1e-12)
    assert np.all(np.diff(g.log_snr) < 0)
    assert g.alpha_bar_ext[0] == 1.0 and np.array_equal(g.alpha_bar_ext[1:], g.alpha_bar)


def test_fingerprint_tells_grids_apart():
    ns = NoiseSchedule.linear(1000)
    assert ns.respace(100).fingerprint == NoiseSchedule.linear(1000).respace(100).fingerprint
    assert ns.respace(100).fingerprint != ns.respace(50).fingerprint
    assert ns.respace(100).fingerprint != NoiseSchedule.cosine(1000).respace(100).fingerprint


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: NoiseSchedule.from_betas([0.1, 1.5]), "inside"),
        (lambda: NoiseSchedule.from_alpha_bar([0.5, 0.6]), "strictly decreasing"),
        (lambda: NoiseSchedule.from_alpha_bar([[0.5, 0.4]]), "1-D"),
        (lambda: NoiseSchedule.from_alpha_bar([0.9, np.nan]), "NaN"),
        (lambda: NoiseSchedule.linear(1000).respace(1), "K"),
        (lambda: NoiseSchedule.linear(100).respace(101), "K"),
    ],
)
def test_bad_input(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()

