"""Zero-tuning peers of AutoLR, as their authors publish them.

Keras 3 ports checked step by step against the reference implementations
(`tests/test_peer_optimizers.py`):

- `ScheduleFreeAdamW` (+ `ScheduleFreeEval`, the callback that evaluates
  at the averaged point `x`): `schedulefree.AdamWScheduleFree`.
- `Prodigy` (+ `prodigy_cosine`): `optax.contrib.prodigy`, with
  `prodigyopt`'s defaults.

`PEERS` maps a method name to a function `(total_steps) -> (optimizer,
callbacks)`: what a benchmark passes to `compile` and `fit`. After `fit`
the model holds the point to evaluate (for Schedule-Free, `x`). The
settings and where each comes from are in each entry's docstring.
"""

from benchmarks.peers.prodigy import Prodigy, prodigy_cosine
from benchmarks.peers.schedule_free import (
    ScheduleFreeAdamW,
    ScheduleFreeEval,
    recalibrate_batchnorm,
)

# The share of the run that the AlgoPerf v0.5 Schedule-Free AdamW
# submission warms up for (`warmup_factor` in `schedulefree/algoperf/
# external_tuning/schedule_free_adamw/tuning_search_space.json`, every
# point; the self-tuning submission takes 0.02 of 0.75 of its step hint).
SCHEDULE_FREE_WARMUP_FRACTION = 0.02


def schedulefree_reference(total_steps, batchnorm_batches=None):
    """`ScheduleFreeAdamW` with the reference's defaults (`schedulefree`
    1.4.1 `AdamWScheduleFree`: learning rate 0.0025, betas (0.9, 0.999),
    epsilon 1e-8, weight decay 0, `weight_lr_power` 2) and the warmup that
    its README recommends, of the length its AlgoPerf submission uses: 2 %
    of the run. With the `ScheduleFreeEval` callback (see it for
    `batchnorm_batches`)."""
    warmup = round(SCHEDULE_FREE_WARMUP_FRACTION * total_steps)
    optimizer = ScheduleFreeAdamW(warmup_steps=warmup)
    return optimizer, [ScheduleFreeEval(batchnorm_batches)]


def prodigy_cosine_peer(total_steps):
    """`prodigy_cosine(total_steps)`: Prodigy with `prodigyopt` 1.1.2's
    defaults (learning rate 1, betas (0.9, 0.999), `beta_3 = sqrt(beta_2)`,
    epsilon 1e-8, weight decay 0, d0 1e-6, d_coef 1, no safeguard warmup,
    no bias correction) and its README's cosine annealing to 0 over the
    run, without warmup. No callback."""
    return prodigy_cosine(total_steps), []


PEERS = {
    "schedulefree_reference": schedulefree_reference,
    "prodigy_cosine": prodigy_cosine_peer,
}

__all__ = [
    "PEERS",
    "Prodigy",
    "ScheduleFreeAdamW",
    "ScheduleFreeEval",
    "prodigy_cosine",
    "recalibrate_batchnorm",
]
