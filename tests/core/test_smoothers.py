"""`smoother="tfp"`: TensorFlow Probability's GP in the minimum test, run
at run time, against the default exact NumPy GP."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import support
from tensorflow_probability.substrates import numpy as tfp

from keras_autolr.core import smoothers as tfp_module
from keras_autolr.core import warmup
from keras_autolr.core.controller import AutoLRController
from keras_autolr.core.gp import MinimumDetector
from keras_autolr.core.losses import detector_inputs
from keras_autolr.core.smoothers import TFPMinimumDetector, make_detector

# Tolerances of the agreement on fixed data, in units of the losses' std
# (means and stds) and in probability: the two fits stop at slightly
# different points of a flat likelihood (L-BFGS-B to its tolerance against
# an exact grid search), nothing else differs.
MEAN_TOL = 2e-3
PROB_TOL = 5e-3


def u_curve(n, minimum_at, noise, seed):
    x = (np.arange(n) + 0.5) / n
    rng = np.random.default_rng(seed)
    return x, 1.0 + 2.0 * (x - minimum_at) ** 2 + noise * rng.normal(size=n)


@pytest.mark.parametrize(
    "n, minimum_at, heteroscedastic",
    [(90, 0.6, False), (300, 1.3, False), (700, 0.8, False), (200, 0.7, True)],
)
def test_posterior_agrees_with_the_numpy_smoother(
    n, minimum_at, heteroscedastic
):
    x, y = u_curve(n, minimum_at, 0.05, seed=n)
    noise = np.linspace(0.5, 3.0, n) if heteroscedastic else None
    ours, theirs = MinimumDetector(), TFPMinimumDetector()
    scale = float(np.std(y))
    a = ours.posterior(x, y, noise=noise, key=2)
    b = theirs.posterior(x, y, noise=noise, key=2)
    np.testing.assert_allclose(b.mean, a.mean, atol=MEAN_TOL * scale)
    np.testing.assert_allclose(b.std, a.std, atol=MEAN_TOL * scale)
    assert b.past_minimum_probability == pytest.approx(
        a.past_minimum_probability, abs=PROB_TOL
    )
    s_a, n_a = ours.fit_hyperparameters(x, y, noise=noise)
    s_b, n_b = theirs.fit_hyperparameters(x, y, noise=noise)
    assert s_b == pytest.approx(s_a, rel=0.05)
    assert n_b == pytest.approx(n_a, rel=0.02)
    # Same subsamples: the same test, probability by probability.
    ta = ours.test(x, y, noise=noise, key=5)
    tb = theirs.test(x, y, noise=noise, key=5)
    assert tb.past_minimum == ta.past_minimum
    np.testing.assert_allclose(tb.probabilities, ta.probabilities, atol=1e-2)
    np.testing.assert_allclose(tb.minimum_x, ta.minimum_x, atol=0.02)


def test_fit_maximises_the_tfp_marginal_likelihood():
    x, y = u_curve(100, 0.4, 0.1, seed=3)
    scale2, noise2 = TFPMinimumDetector().fit_hyperparameters(x, y)

    def log_prob(s2, n2):
        gp = tfp.distributions.GaussianProcess(
            kernel=tfp.math.psd_kernels.ExponentiatedQuadratic(
                amplitude=np.float64(math.sqrt(s2)),
                length_scale=np.float64(0.2),
            ),
            index_points=x[:, None],
            observation_noise_variance=np.float64(n2),
            mean_fn=lambda _: np.float64(np.mean(y)),
            jitter=0.0,
        )
        return float(gp.log_prob(y))

    best = log_prob(scale2, noise2)
    for fs, fn in [(1.3, 1), (0.7, 1), (1, 1.1), (1, 0.9), (2, 2)]:
        assert best > log_prob(scale2 * fs, noise2 * fn)


def test_unequal_noise_is_the_textbook_gp():
    """The whitened kernel gives the posterior of a GP whose noise differs
    from point to point, written out in NumPy here."""
    x, y = u_curve(80, 0.5, 0.02, seed=6)
    noise = np.where(x < 0.5, 1.0, 9.0)
    detector = TFPMinimumDetector()
    scale2, noise2 = detector.fit_hyperparameters(x, y, noise=noise)
    ours = detector.posterior(x, y, noise=noise)
    rel = noise / np.mean(noise)
    k0 = np.exp(-0.5 * ((x[:, None] - x[None, :]) / 0.2) ** 2)
    cross = scale2 * np.exp(-0.5 * ((ours.x[:, None] - x[None, :]) / 0.2) ** 2)
    gram = scale2 * k0 + noise2 * np.diag(rel)
    mean = np.mean(y) + cross @ np.linalg.solve(gram, y - np.mean(y))
    var = scale2 - np.sum(cross * np.linalg.solve(gram, cross.T).T, axis=1)
    np.testing.assert_allclose(ours.mean, mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.std, np.sqrt(np.clip(var, 0, None)), 1e-6)


def streams():
    """Loss records as a controller's tests see them: U-shaped in log LR,
    decreasing only, and with spikes; 12 test points each."""
    rng = np.random.default_rng(11)
    lrs = 1e-4 * 1e4 ** (np.arange(600) / 600)
    out = []
    for best in (3e-3, 3e-2, 0.3):
        curve = 1.0 + 0.3 * np.log10(lrs / best) ** 2
        out.append(curve + 0.05 * rng.normal(size=600))
    falling = 2.0 - 1.5 / (1.0 + (3.0 / lrs) ** 0.5)
    out.append(falling + 0.01 * rng.normal(size=600))
    spiky = out[0].copy()
    spiky[rng.choice(600, 6, replace=False)] += 2.0
    out.append(spiky)
    return out


@pytest.mark.parametrize("filters", [True, False])
def test_votes_agree_on_most_tests(filters):
    ours, theirs = MinimumDetector(), TFPMinimumDetector()
    agree = total = 0
    for losses in streams():
        for key, now in enumerate(range(100, 601, 50)):
            centers = np.arange(now) + 0.5
            counts = np.ones(now)
            args = (centers, losses[:now], counts, now, 50, False, key)
            a = warmup.minimum_test(ours, *args, filters)
            b = warmup.minimum_test(theirs, *args, filters)
            assert a.ran == b.ran
            total += 1
            agree += a.votes == b.votes
    assert total == 55
    assert agree >= 0.9 * total


def test_the_controller_runs_tfp_at_run_time(monkeypatch):
    calls = []
    posterior = TFPMinimumDetector._posterior

    def spy(self, *args):
        calls.append(1)
        return posterior(self, *args)

    monkeypatch.setattr(TFPMinimumDetector, "_posterior", spy)
    runs, tfp_calls, states = {}, {}, {}
    for smoother in ("numpy", "tfp"):
        before = len(calls)
        ctl = AutoLRController.reference(
            2000, 50, smoother=smoother, background=False
        )
        rng = np.random.default_rng(0)
        lr = ctl.lr
        while ctl.phase == "warmup":
            if ctl.steps == 300:
                states[smoother] = ctl.get_state()
            loss = 1.0 + 0.3 * math.log10(lr / 1e-2) ** 2
            lr = ctl.step(loss + 0.05 * rng.normal())
        runs[smoother] = ctl
        tfp_calls[smoother] = len(calls) - before
    tfp_ctl = runs["tfp"]
    assert tfp_ctl.settings.smoother == "tfp"
    assert tfp_ctl.get_config()["smoother"] == "tfp"
    # Only the TFP run fits TFP's GP: one posterior per test up to 256
    # losses (every subsample is all of them), 5 beyond.
    assert tfp_calls["numpy"] == 0
    assert tfp_calls["tfp"] >= tfp_ctl.detector_runs > 0
    assert tfp_ctl.switch_step == runs["numpy"].switch_step
    assert tfp_ctl.landing_lr == pytest.approx(
        runs["numpy"].landing_lr, rel=0.02
    )
    # A controller rebuilt from a TFP run's state tests with TFP too.
    clone = AutoLRController.from_state(states["tfp"])
    before = len(calls)
    rng = np.random.default_rng(1)
    lr = clone.lr
    for _ in range(100):
        loss = 1.0 + 0.3 * math.log10(lr / 1e-2) ** 2
        lr = clone.step(loss + 0.05 * rng.normal())
    assert clone.settings.smoother == "tfp"
    assert len(calls) > before


def test_default_smoother_is_numpy():
    assert AutoLRController(1000).settings.smoother == "numpy"
    assert type(make_detector()) is MinimumDetector
    assert type(make_detector("tfp", seed=3)) is TFPMinimumDetector
    with pytest.raises(ValueError, match="Argument `smoother`"):
        make_detector("gpytorch")


def test_missing_tfp_says_what_to_install(monkeypatch):
    monkeypatch.setattr(tfp_module, "_TFP", [])
    for name in list(sys.modules):
        if name.startswith("tensorflow_probability"):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"keras-autolr\[tfp\]"):
        AutoLRController(1000, smoother="tfp")


def test_local_noise_inputs_reach_the_tfp_gp():
    """With the filters, the test gives the GP each bin's local noise: the
    TFP smoother takes it (the whitened kernel), as the NumPy one does."""
    losses = streams()[1][:400]
    means, variance = warmup.gp_inputs(losses)
    assert variance is not None and np.ptp(variance) > 0
    assert np.array_equal(means, detector_inputs(losses)[0])
    x = (np.arange(400) + 0.5) / 400
    a = MinimumDetector().posterior(x, means, noise=variance)
    b = TFPMinimumDetector().posterior(x, means, noise=variance)
    np.testing.assert_allclose(b.mean, a.mean, atol=MEAN_TOL * np.std(means))


@pytest.mark.slow
def test_demo_reference_with_tfp_after_tensorflow(tmp_path):
    """The demo imports Keras (and so TensorFlow) before the smoother: the
    NumPy substrate must import then too, without tf-keras."""
    support.require("sklearn")
    png = tmp_path / "run.png"
    args = ["demo", "--epochs", "4", "--reference", "--smoother", "tfp"]
    done = subprocess.run(
        [sys.executable, "-m", "keras_autolr", *args, "--plot", str(png)],
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the AutoWU paper's setting, smoother tfp" in done.stdout
    assert "AutoLR decided: warmup" in done.stdout
    assert png.stat().st_size > 10_000
