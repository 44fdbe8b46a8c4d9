"""The AutoWU paper's setting (Kim et al., 2021), as options of AutoLR.

`AutoLRController.reference(total_steps, steps_per_epoch)` and
`AutoLR.reference(epochs)` build a controller or callback with `OPTIONS`.
Each option against the paper and its public code (kakaobrain/autowu,
`autowu.py`):

- initial LR `min_lr=1e-5` and `max_lr=1.0`, `warmup="exponential"`:
  the LR grows geometrically every step (`ExponentialLR`) from
  1e-5 towards 1.0.
- cap `max_warmup_fraction=0.5`: the ramp would reach `max_lr`
  after half of `total_steps`, where warmup ends at the latest.
- check period `check_every=steps_per_epoch`: one test at the end
  of every epoch, on every loss recorded so far (`bin_steps=1`,
  one bin per step; `min_bins=3`, so the first test is at the end
  of the first epoch).
- acting `act_at_once=True`: the test's answer is acted on at the
  step where it ran, as the reference does (it waits for its GP);
  the default `False` would act one epoch later.
- voting `num_tests=5`, `confidence=0.95`: 5 posteriors, each on an
  independent seeded subsample, vote; the test is positive when a
  majority has `max_i P(f(x_i) < f(now)) > 0.95`.
- patience `patience=3`: warmup ends after 3 consecutive positive
  tests (the reference's `deque(maxlen=3)` of votes, all true).
- filters `filters=False`: the vote alone decides, on the raw
  losses with one noise level, as in the reference; none of the
  package's filters (clear fall, rise above the noise,
  despiking, the explosion rule) applies.
- GP: constant mean, RBF of length scale 0.2 in normalised time,
  output scale and noise fitted on at most 100 subsampled losses
  by maximum marginal likelihood. The reference takes 100 Adam
  steps (rate 0.01) from the previous test's values (noise starts
  at 1e-3) and also fits the constant mean; here the maximum is
  found exactly (`smoother="numpy"`) or by L-BFGS-B on TFP's
  likelihood (`smoother="tfp"`), and the mean is the data mean.
- roll-back `landing=1.0`: at the switch the LR falls to the mean,
  over the 5 posteriors, of the LR in use at each posterior-mean
  minimum (geometric interpolation along the ramp), as the
  reference.
- decay `decay="constant_cosine"`, `cooldown_fraction=0.2`: the
  LR stays at that value, then follows a cosine to 0 over the last
  20 % of the steps (the reference's `immediate_cooldown=False`,
  the paper's constant-then-cosine schedule).

Remaining differences from the reference: a test conditions each
posterior on at most 256 losses on a 128-point grid (the reference:
500 and 500), and beyond 1,024 steps neighbouring losses are
averaged into bins weighted by their step count; at the cap, warmup
ends at the LR of the latest test's smoothed minimum, not at the
LR reached there (the reference's behaviour, which on a 20-epoch
MNIST-1D budget ended warmup at LR 0.8 to 1.0 and left the network
dead); a non-finite
loss ends warmup at once at a safe LR, and a loss that blows up
during the decay restarts it at half the LR (the reference has
neither: these are safety nets that change nothing while the loss
behaves).
"""

from typing import Any

# The test period, one epoch, is set where the epoch is known.
OPTIONS: dict[str, Any] = {
    "min_lr": 1e-5,
    "max_lr": 1.0,
    "max_warmup_fraction": 0.5,
    "warmup": "exponential",
    "decay": "constant_cosine",
    "cooldown_fraction": 0.2,
    "patience": 3,
    "num_tests": 5,
    "confidence": 0.95,
    "min_bins": 3,
    "act_at_once": True,
    "filters": False,
    "landing": 1.0,
}
