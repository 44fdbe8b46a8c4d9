"""The options of an AutoLR schedule: their defaults, checks and meaning.

`Settings` is the one place where an option of `AutoLRController` (and so
of the `AutoLR` callback) is declared, documented and validated; the
controller and the callback take their options from it. `AUTOWU` is the
AutoWU paper's setting as options (`AutoLRController.reference`,
`AutoLR.reference`); `docs/reference.md` compares each with the paper's
code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from keras_autolr.core import checks as check
from keras_autolr.core import schedule

# The Gaussian processes a test can use (`keras_autolr.core.smoothers`).
SMOOTHERS = ("numpy", "tfp")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The options of an AutoLR schedule, checked.

    Args:
        total_steps: the step budget; the LR is 0 from this step on.
        min_lr: LR of the first step. Defaults to `1e-4` (AutoWU: `1e-5`).
            Lower it when the best LR of your model may be below about
            1e-3: the ramp needs some steps below the minimum.
        max_lr: LR the ramp would reach at the cap. Defaults to `1.0`.
        max_warmup_fraction: the cap, as a fraction of `total_steps`, in
            (0, 1]. Defaults to `0.4` (AutoWU: 0.5 from 1e-5); the ramp then
            grows one decade per 10 % of the budget.
        warmup: `"exponential"` (geometric growth) or `"linear"`.
            Defaults to `"exponential"`.
        decay: `"linear"` (a straight line from the peak to 0),
            `"cosine"` (a half cosine to 0) or `"constant_cosine"` (the
            peak held, then cosine over the last `cooldown_fraction` of the
            budget, as the AutoWU reference). Defaults to `"linear"`.
        cooldown_fraction: length of the cosine of `"constant_cosine"`, as a
            fraction of `total_steps`, in (0, 1]. Defaults to `0.2`.
        check_every: steps between two tests, a multiple of `bin_steps`
            and of `chunk_steps`. `None` picks about 100 tests over the
            warmup cap. Defaults to `None`.
        patience: consecutive positive tests needed to end warmup.
            Defaults to `2`.
        num_tests: posteriors that vote in each test. Defaults to `5`.
        confidence: probability above which a posterior votes "past the
            minimum". Defaults to `0.95`.
        bin_steps: losses are averaged over bins of this many steps before
            a test sees them. Defaults to `1`.
        chunk_steps: the steps whose losses arrive together (`AutoLR`: the
            model's `steps_per_execution`): the tests and the warmup cap
            fall on multiples of it and of `bin_steps`, where the caller
            can act, so that decisions are the same for every chunk size
            that divides both `check_every` and the cap. Defaults to `1`.
        min_bins: no test before this many finite bins. Defaults to `8`.
        max_bins: memory bound: at this many bins, neighbours are merged
            pairwise. Defaults to `1024`.
        seed: seed of the detector's subsampling; equal seeds and losses
            give equal decisions in every process. Defaults to `0`.
        background: run the tests on a background thread; `False` runs
            them on the calling thread with the same decisions (not part of
            `config()`). Defaults to `True`.
        act_at_once: wait for each test and act on its answer at the step
            where it ran, as the AutoWU reference does, rather than one
            test later; training then waits for every test. Decisions are
            deterministic either way. Defaults to `False`.
        filters: the filters on top of the GP's vote: a test counts only
            once the loss has clearly fallen and if the loss has risen by
            more than 2 noise std; single bad bins are despiked and each
            bin has its local noise; a loss back at its starting level
            ends warmup at the next test. `False`: the GP's majority vote
            alone on the raw bin means, as the AutoWU reference. Non-finite
            losses, and blow-ups during decay, are handled either way.
            Defaults to `True`.
        landing: warmup that ends with the loss rising gradually (the
            tests' vote, the overshoot bound or the cap) lands at this
            fraction of the LR at the smoothed minimum, in (0, 1]: along a
            fast ramp the loss reaches its minimum past the LR the model
            sustains. An explosion lands at the smoothed minimum's LR, and
            at most at half the LR of the last step run. Defaults to `0.5`
            (the AutoWU reference: `1.0`).
        smoother: the GP of the test: `"numpy"` (an exact NumPy/SciPy GP,
            `MinimumDetector`) or `"tfp"` (TensorFlow Probability's,
            `TFPMinimumDetector`; `pip install "keras-autolr[tfp]"`).
            Defaults to `"numpy"`.

    Raises:
        ValueError: naming the option and the value received, for a value
            out of its range.

    Example:

    >>> Settings(total_steps=1000).check_every  # ~100 tests over the cap.
    4
    """

    total_steps: int
    min_lr: float = 1e-4
    max_lr: float = 1.0
    max_warmup_fraction: float = 0.4
    warmup: str = "exponential"
    decay: str = "linear"
    cooldown_fraction: float = 0.2
    check_every: int | None = None
    patience: int = 2
    num_tests: int = 5
    confidence: float = 0.95
    bin_steps: int = 1
    chunk_steps: int = 1
    min_bins: int = 8
    max_bins: int = 1024
    seed: int = 0
    background: bool = True
    act_at_once: bool = False
    filters: bool = True
    smoother: str = "numpy"
    landing: float = 0.5

    def __post_init__(self) -> None:
        check.check_int("total_steps", self.total_steps, 2)
        check.check_float("min_lr", self.min_lr, 0.0, low_open=True)
        check.check_float("max_lr", self.max_lr, 0.0, low_open=True)
        if not self.min_lr < self.max_lr:
            raise ValueError(
                "Argument `min_lr` must be < `max_lr`. Received: "
                f"min_lr={self.min_lr}, max_lr={self.max_lr}"
            )
        check.check_float(
            "max_warmup_fraction", self.max_warmup_fraction, 0.0, 1.0, True
        )
        check.check_choice("warmup", self.warmup, schedule.WARMUPS)
        check.check_choice("decay", self.decay, schedule.DECAYS)
        check.check_float(
            "cooldown_fraction", self.cooldown_fraction, 0, 1, True
        )
        check.check_int("bin_steps", self.bin_steps, 1)
        check.check_int("chunk_steps", self.chunk_steps, 1)
        check_every = self.check_every
        unit = self.step_unit
        if check_every is None:
            ramp = max(1, int(self.max_warmup_fraction * self.total_steps))
            check_every = unit * max(1, round(ramp / 100 / unit))
        check.check_int("check_every", check_every, 1)
        check.check_multiple(
            "check_every", check_every, "bin_steps", self.bin_steps
        )
        check.check_multiple(
            "check_every", check_every, "chunk_steps", self.chunk_steps
        )
        check.check_int("patience", self.patience, 1)
        # Checked again by the detector, which is public on its own.
        check.check_int("num_tests", self.num_tests, 1)
        check.check_float("confidence", self.confidence, 0.5, 1.0, False, True)
        check.check_int("seed", self.seed, 0)
        check.check_int("min_bins", self.min_bins, 3)
        check.check_int("max_bins", self.max_bins, 16)
        if self.max_bins % 2:
            raise ValueError(
                "Argument `max_bins` must be even. "
                f"Received: max_bins={self.max_bins}"
            )
        check.check_bool("background", self.background)
        check.check_bool("act_at_once", self.act_at_once)
        check.check_bool("filters", self.filters)
        check.check_choice("smoother", self.smoother, SMOOTHERS)
        check.check_float("landing", self.landing, 0.0, 1.0, True)
        # Plain Python numbers, as `config()` and the saved states hold.
        object.__setattr__(self, "check_every", check_every)
        for name, kind in (
            ("total_steps", int),
            ("min_lr", float),
            ("max_lr", float),
            ("max_warmup_fraction", float),
            ("cooldown_fraction", float),
            ("check_every", int),
            ("patience", int),
            ("num_tests", int),
            ("confidence", float),
            ("seed", int),
            ("bin_steps", int),
            ("chunk_steps", int),
            ("min_bins", int),
            ("max_bins", int),
            ("landing", float),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def step_unit(self) -> int:
        """Where a bin and a chunk both end: the grid of the tests and of
        the cap."""
        return math.lcm(self.bin_steps, self.chunk_steps)

    @property
    def ramp_steps(self) -> int:
        """The warmup cap in steps, where a bin and a chunk end, so that the
        callback sees the switch at the step it happens whatever the chunk
        size."""
        ramp = int(self.max_warmup_fraction * self.total_steps)
        aligned = ramp // self.step_unit * self.step_unit
        return aligned if aligned else max(1, ramp)

    def shape(self) -> schedule.Shape:
        """The ramp, decay and budget of the schedule."""
        return schedule.Shape(
            warmup=self.warmup,
            decay=self.decay,
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            ramp_steps=float(self.ramp_steps),
            total_steps=float(self.total_steps),
            cooldown_steps=self.cooldown_fraction * self.total_steps,
        )

    def config(self) -> dict[str, Any]:
        """Every option but `background` (which changes no decision), for
        `AutoLRController(**config)`."""
        config = dataclasses.asdict(self)
        del config["background"]
        return config


FIELDS = tuple(f.name for f in dataclasses.fields(Settings))
# The options that `AutoLRController` and `AutoLR` take as keywords.
OPTION_NAMES = tuple(name for name in FIELDS if name != "total_steps")

# The AutoWU paper's setting (Kim et al., 2021; kakaobrain/autowu), each
# option compared with the paper's code in `docs/reference.md`. The test
# period, one epoch, is set where the epoch is known.
AUTOWU: dict[str, Any] = {
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
