"""The AutoLR state machine: adaptive warmup, then decay, over a step budget.

Framework-free. It takes the training loss of each step (or the mean of a
chunk of steps), owns the minimum detector, and returns the learning rate of
the next step. Custom training loops use it directly:

```python
ctl = AutoLRController(total_steps=10_000)
for batch in data:
    optimizer.learning_rate = lr  # From the previous call (or ctl.lr).
    loss = train_step(batch)
    lr = ctl.step(loss)
```

All time is counted in optimizer steps; epochs appear only in the Keras
adapter. The whole schedule is a pure function of two numbers decided on the
way, the switch step and the peak LR (`keras_autolr.schedules.autolr`), so
the Keras adapter can evaluate it in-graph every step and touch the device
only when a decision changes them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import numpy as np

from keras_autolr import background, schedules
from keras_autolr.detector import MinimumDetector

WARMUP = "warmup"
DECAY = "decay"
_STATE_FORMAT = 2


class AutoLRController:
    """Adaptive warmup (AutoWU) and decay to zero over `total_steps` steps.

    Warmup starts at `min_lr` and grows the LR every step so that it would
    reach `max_lr` at the cap, `max_warmup_fraction * total_steps`; with
    `fast_start > 1` it grows that many times faster until the loss starts
    to fall (an LR too small to move the loss teaches nothing, neither to
    the network nor to the detector). Every `check_every` steps a
    Gaussian-process test asks whether the loss has passed its minimum
    (once the loss has clearly fallen: before, the GP is not run); after
    `patience` consecutive "yes" the LR rolls back to the LR at the
    smoothed loss minimum and decays from there to 0 at `total_steps`. A
    loss that climbs back to its starting level (an explosion, or a
    network that died) ends warmup at the next test, at the smoothed
    minimum's LR but at most half the LR tested; a non-finite loss at
    once. If the cap comes first, warmup ends there at the LR of the
    smoothed minimum so far.

    A test runs on a background thread while training goes on, and its
    answer takes effect at the next test point, `check_every` steps later
    (or at the cap, if that comes first): the training thread does not
    wait for the GP, and the fixed delay makes every decision the same
    whether the thread is fast or slow, and in every process. The test at
    the cap, and a non-finite loss, act at once.

    Args:
        total_steps: the step budget; the LR is 0 from this step on.
        min_lr: LR of the first step. Defaults to `1e-4`, a decade above
            AutoWU's `1e-5`: with the cap at 0.4 the ramp grows at the same
            rate, one decade per 10 % of the budget, without spending that
            10 % on LRs that teach almost nothing (quality benchmark:
            better at every batch size but B=8192 with LAMB, within its
            seed spread). Lower it when the best LR of your model may be
            below about 1e-3: the ramp needs some steps below the minimum.
        max_lr: LR the ramp would reach at the cap. Defaults to `1.0`.
        max_warmup_fraction: the cap, as a fraction of `total_steps`, in
            (0, 1]. Defaults to `0.4` (AutoWU: 0.5 from 1e-5). With the
            default LRs the ramp then grows one decade per 10 % of the
            budget: this rate sets how finely the tests resolve the
            minimum.
        warmup: `"exponential"` (geometric growth) or `"linear"`.
            Defaults to `"exponential"`.
        fast_start: speed-up of the ramp until the first test that sees the
            loss falling (its median over the last 8 bins more than 3 noise
            standard deviations below the first 8), `>= 1`; `1` is the
            AutoWU ramp. Defaults to `1.0`: in the quality benchmark `3.0`
            shortened warmup by a quarter and helped AdamP at batch 2048,
            but left too few steps to see the minimum at batch 8192 and
            overshot with LAMB (`benchmarks/README.md`).
        decay: `"cosine"` (from the peak to 0), `"linear"` (a straight
            line from the peak to 0) or `"constant_cosine"` (the peak held,
            then cosine over the last `cooldown_fraction` of the budget, as
            the AutoWU reference). Defaults to `"cosine"`: in the quality
            benchmark `"linear"` gained 2 points with AdamP at batch 8192
            but lost 1.3 with LAMB at batch 256 (`benchmarks/README.md`).
        cooldown_fraction: length of the cosine of `"constant_cosine"`, as a
            fraction of `total_steps`, in (0, 1]. Defaults to `0.2`.
        check_every: steps between two tests, a multiple of `bin_steps`.
            `None` picks about 100 tests over the warmup cap. Set it to the
            steps per epoch (with `patience=3`, `decay="constant_cosine"`)
            to reproduce the AutoWU reference. Defaults to `None`.
        patience: consecutive positive tests needed to end warmup.
            Defaults to `3`.
        num_tests: posteriors that vote in each test. Defaults to `5`.
        confidence: probability above which a posterior votes "past the
            minimum". Defaults to `0.95`.
        bin_steps: losses are averaged over bins of this many steps before
            the GP sees them. Use a multiple of `steps_per_execution` to make
            decisions independent of it. Defaults to `1`.
        min_bins: no test before this many finite bins. Defaults to `8`.
        max_bins: memory bound: at this many bins, neighbours are merged
            pairwise (bins get twice as wide). Defaults to `1024`.
        seed: seed of the detector's subsampling; equal seeds and losses
            give equal decisions in every process. Defaults to `0`.
        background: run the tests on a background thread. `False` runs
            them on the calling thread, with the same decisions (each
            still acts one test later); not part of `get_config()`, since
            it changes no decision. Defaults to `True`.

    Example:

    >>> ctl = AutoLRController(total_steps=1000)
    >>> lr = ctl.lr  # 1e-4, for the first step.
    >>> for step in range(1000):
    ...     loss = 1.0 + (math.log10(lr) + 2.0) ** 2  # Best LR 1e-2.
    ...     lr = ctl.step(loss)
    >>> ctl.phase, round(math.log10(ctl.peak_lr))
    ('decay', -2)
    """

    def __init__(
        self,
        total_steps: int,
        *,
        min_lr: float = 1e-4,
        max_lr: float = 1.0,
        max_warmup_fraction: float = 0.4,
        warmup: str = "exponential",
        fast_start: float = 1.0,
        decay: str = "cosine",
        cooldown_fraction: float = 0.2,
        check_every: int | None = None,
        patience: int = 3,
        num_tests: int = 5,
        confidence: float = 0.95,
        peak_fraction: float = 1.0,
        bin_steps: int = 1,
        min_bins: int = 8,
        max_bins: int = 1024,
        seed: int = 0,
        background: bool = True,
    ) -> None:
        _check_int("total_steps", total_steps, 2)
        _check_float("min_lr", min_lr, low=0.0, low_open=True)
        _check_float("max_lr", max_lr, low=0.0, low_open=True)
        if not min_lr < max_lr:
            raise ValueError(
                "Argument `min_lr` must be < `max_lr`. Received: "
                f"min_lr={min_lr}, max_lr={max_lr}"
            )
        _check_float("max_warmup_fraction", max_warmup_fraction, 0.0, 1.0, True)
        _check_choice("warmup", warmup, schedules.WARMUPS)
        _check_float("fast_start", fast_start, 1.0)
        _check_choice("decay", decay, schedules.DECAYS)
        _check_float("cooldown_fraction", cooldown_fraction, 0.0, 1.0, True)
        _check_float("peak_fraction", peak_fraction, 0.0, 1.0, True)
        _check_int("bin_steps", bin_steps, 1)
        if check_every is None:
            ramp = max(1, int(max_warmup_fraction * total_steps))
            check_every = bin_steps * max(1, round(ramp / 100 / bin_steps))
        _check_int("check_every", check_every, 1)
        if check_every % bin_steps:
            raise ValueError(
                "Argument `check_every` must be a multiple of `bin_steps`. "
                f"Received: check_every={check_every}, bin_steps={bin_steps}"
            )
        _check_int("patience", patience, 1)
        _check_int("min_bins", min_bins, 3)
        _check_int("max_bins", max_bins, 16)
        if max_bins % 2:
            raise ValueError(
                "Argument `max_bins` must be even. "
                f"Received: max_bins={max_bins}"
            )
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.max_warmup_fraction = float(max_warmup_fraction)
        self.warmup = warmup
        self.fast_start = float(fast_start)
        self.decay = decay
        self.cooldown_fraction = float(cooldown_fraction)
        self.check_every = int(check_every)
        self.patience = int(patience)
        self.peak_fraction = float(peak_fraction)
        self.bin_steps = int(bin_steps)
        self.min_bins = int(min_bins)
        self.max_bins = int(max_bins)
        if not isinstance(background, bool):
            raise ValueError(
                "Argument `background` must be True or False. "
                f"Received: background={background!r}"
            )
        self.background = background
        self.detector = MinimumDetector(
            num_tests=num_tests, confidence=confidence, seed=seed
        )
        # The cap falls on a bin boundary, where a chunk of
        # `steps_per_execution` steps ends, so that the callback sees the
        # switch at the step it happens whatever the chunk size.
        ramp = int(self.max_warmup_fraction * total_steps)
        aligned = ramp // self.bin_steps * self.bin_steps
        self.ramp_steps = aligned if aligned else max(1, ramp)
        self.cooldown_steps = self.cooldown_fraction * self.total_steps
        self._schedule_constants = self._make_schedule_constants()
        self._reset()

    # ------------------------------------------------------------------
    # Configuration and state.

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for `AutoLRController(**config)`."""
        return {
            "total_steps": self.total_steps,
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "max_warmup_fraction": self.max_warmup_fraction,
            "warmup": self.warmup,
            "fast_start": self.fast_start,
            "decay": self.decay,
            "cooldown_fraction": self.cooldown_fraction,
            "check_every": self.check_every,
            "patience": self.patience,
            "num_tests": self.detector.num_tests,
            "confidence": self.detector.confidence,
            "peak_fraction": self.peak_fraction,
            "bin_steps": self.bin_steps,
            "min_bins": self.min_bins,
            "max_bins": self.max_bins,
            "seed": self.detector.seed,
        }

    def reset(self) -> None:
        """Forgets every recorded loss and decision: a new schedule."""
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._switch_step = self.ramp_steps
        self._slow_step: int | None = None
        self._peak_lr = self.max_lr
        self._minimum_lr: float | None = None
        self._bin_width = self.bin_steps
        self._bin_sums: list[float] = []
        self._bin_counts: list[float] = []
        self._open_sum = 0.0
        self._open_count = 0.0
        self._check_mark = 0
        self._num_checks = 0
        self._detector_runs = 0
        self._consecutive = 0
        self._last_probability: float | None = None
        self._events: list[dict[str, Any]] = []
        self._revision = 0
        self._lr_cache: tuple[int, dict[float, float]] = (-1, {})
        # The test started at the last test point, acted on at the next
        # one: its `result()` is a `_TestOutcome`.
        self._pending: Any = None

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as JSON-compatible values.

        `json.dumps(ctl.get_state())` is a complete checkpoint; non-finite
        bin values are stored as `None`.
        """
        return {
            "format": _STATE_FORMAT,
            "config": self.get_config(),
            "steps": self._steps,
            "switch_step": self._switch_step,
            "slow_step": self._slow_step,
            "peak_lr": self._peak_lr,
            "minimum_lr": self._minimum_lr,
            "bin_width": self._bin_width,
            "bin_sums": [_to_json(v) for v in self._bin_sums],
            "bin_counts": list(self._bin_counts),
            "open_sum": _to_json(self._open_sum),
            "open_count": self._open_count,
            "check_mark": self._check_mark,
            "num_checks": self._num_checks,
            "detector_runs": self._detector_runs,
            "consecutive": self._consecutive,
            "last_probability": self._last_probability,
            "events": [dict(e) for e in self._events],
            "revision": self._revision,
            # A saved state holds the answer (waited for), not the job.
            "pending": (
                None
                if self._pending is None
                else self._pending.result().to_json()
            ),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AutoLRController:
        """A controller rebuilt from a `get_state()` (e.g. a saved file)."""
        if not isinstance(state, dict) or "config" not in state:
            raise ValueError(
                "Not an AutoLRController state: expected a dict from "
                f"get_state(). Received: {type(state).__name__}"
            )
        controller = cls(**state["config"])
        controller.set_state(state)
        return controller

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a `get_state()` of a controller with the same config.

        Raises:
            ValueError: if the state is of another format or configuration.
        """
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(
                "Not an AutoLRController state of format "
                f"{_STATE_FORMAT}. Received keys: "
                f"{sorted(state) if isinstance(state, dict) else state!r}"
            )
        if state["config"] != self.get_config():
            diff = {
                k: (v, state["config"].get(k))
                for k, v in self.get_config().items()
                if state["config"].get(k) != v
            }
            raise ValueError(
                "The saved AutoLR state was made with other settings "
                f"(this run's value, saved value): {diff}. Resume with the "
                "settings of the saved run, or start without the state."
            )
        self._steps = int(state["steps"])
        self._switch_step = int(state["switch_step"])
        self._slow_step = state["slow_step"]
        self._peak_lr = float(state["peak_lr"])
        self._minimum_lr = state["minimum_lr"]
        self._bin_width = int(state["bin_width"])
        self._bin_sums = [_from_json(v) for v in state["bin_sums"]]
        self._bin_counts = [float(v) for v in state["bin_counts"]]
        self._open_sum = _from_json(state["open_sum"])
        self._open_count = float(state["open_count"])
        self._check_mark = int(state["check_mark"])
        self._num_checks = int(state["num_checks"])
        # Not in states saved by 0.1.0: informational only.
        self._detector_runs = int(state.get("detector_runs", 0))
        self._consecutive = int(state["consecutive"])
        self._last_probability = state["last_probability"]
        self._events = [dict(e) for e in state["events"]]
        self._revision = int(state["revision"])
        self._lr_cache = (-1, {})
        # Not in states saved before tests ran in the background.
        pending = state.get("pending")
        self._pending = (
            None
            if pending is None
            else background.completed(_TestOutcome.from_json(pending))
        )

    # ------------------------------------------------------------------
    # Read-only views.

    @property
    def steps(self) -> int:
        """Number of steps whose loss has been observed."""
        return self._steps

    @property
    def phase(self) -> str:
        """`"warmup"` before the switch step, `"decay"` from it on."""
        return WARMUP if self._steps < self._switch_step else DECAY

    @property
    def switch_step(self) -> int:
        """First step of the decay (the warmup cap until a decision)."""
        return self._switch_step

    @property
    def first_test_step(self) -> int:
        """The earliest step at which a test can run: `min_bins` bins."""
        step = self.min_bins * self.bin_steps
        return -(-step // self.check_every) * self.check_every

    @property
    def slow_step(self) -> int | None:
        """Step from which the ramp runs at its normal speed, once known."""
        return self._slow_step

    @property
    def switch_event(self) -> dict[str, Any] | None:
        """The event that ended warmup, once it has."""
        switches = [e for e in self._events if e["event"] == "switch"]
        return dict(switches[0]) if switches else None

    @property
    def peak_lr(self) -> float:
        """LR at which the decay starts (provisional during warmup)."""
        return self._peak_lr

    @property
    def minimum_lr(self) -> float | None:
        """LR at the smoothed loss minimum of the latest test, if any."""
        return self._minimum_lr

    @property
    def lr(self) -> float:
        """LR of the next step, `self.steps`."""
        return float(self.lr_at(self._steps))

    @property
    def revision(self) -> int:
        """Increases whenever `switch_step` or `peak_lr` changes."""
        return self._revision

    @property
    def events(self) -> list[dict[str, Any]]:
        """Decisions so far, each a dict with at least `step` and `event`."""
        return [dict(e) for e in self._events]

    @property
    def num_checks(self) -> int:
        """Number of tests so far (test points with enough bins)."""
        return self._num_checks

    @property
    def detector_runs(self) -> int:
        """Tests that ran the GP: every test from the first where the loss
        had clearly fallen, and the last one before the cap."""
        return self._detector_runs

    @property
    def last_probability(self) -> float | None:
        """Mean past-minimum probability of the latest test, if it ran the
        GP."""
        return self._last_probability

    @property
    def rescues(self) -> list[dict[str, Any]]:
        """Decay restarts after the loss blew up during decay, in order."""
        return [dict(e) for e in self._events if e["event"] == "rescue"]

    @property
    def decay_start(self) -> int:
        """First step of the current decay: the switch, or the last rescue."""
        segments = self._decay_segments()
        return segments[-1][0]

    @property
    def decay_peak_lr(self) -> float:
        """LR at `decay_start`: `peak_lr`, or halved by each rescue."""
        return self._decay_segments()[-1][1]

    def _decay_segments(self) -> list[tuple[int, float]]:
        """`(start, peak)` of the first decay and of every restart."""
        return [(self._switch_step, self._peak_lr)] + [
            (e["step"], e["peak_lr"])
            for e in self._events
            if e["event"] == "rescue"
        ]

    def lr_at(self, step: Any) -> Any:
        """LR of step(s) `step` under the decisions made so far."""
        if isinstance(step, int | float) or np.ndim(step) == 0:
            # The Keras adapter asks for the LR of the same few steps
            # again and again between two decisions.
            step = float(step)
            if self._lr_cache[0] != self._revision:
                self._lr_cache = (self._revision, {})
            cache = self._lr_cache[1]
            if step not in cache:
                if len(cache) > 8:
                    cache.clear()
                cache[step] = self._lr_at(step, schedules.SCALAR)
            return cache[step]
        return self._lr_at(np.asarray(step, dtype=np.float64), np)

    def _lr_at(self, step: Any, xp: Any) -> Any:
        segments = self._decay_segments()
        lr = schedules.autolr(
            step,
            switch_step=self._switch_step,
            peak_lr=self._peak_lr,
            slow_step=self.slow_step_value,
            xp=xp,
            **self._schedule_constants,
        )
        for start, peak in segments[1:]:
            restarted = schedules.decay(
                self.decay,
                xp.minimum(step, self.total_steps),
                peak,
                start,
                self.total_steps,
                self.cooldown_steps,
                xp=xp,
            )
            lr = xp.where(step >= start, restarted, lr)
        return lr

    @property
    def schedule_constants(self) -> dict[str, Any]:
        """The fixed arguments of `schedules.autolr` for this budget."""
        return dict(self._schedule_constants)

    def _make_schedule_constants(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "decay_kind": self.decay,
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "ramp_steps": float(self.ramp_steps),
            "total_steps": float(self.total_steps),
            "cooldown_steps": float(self.cooldown_steps),
            "fast_start": self.fast_start,
        }

    @property
    def slow_step_value(self) -> int:
        """`slow_step` as a step number: `total_steps` while unknown."""
        return self.total_steps if self._slow_step is None else self._slow_step

    def ramp_lr_at(self, step: Any) -> Any:
        """LR of ramp step(s) `step` (whether or not warmup ended there)."""
        return schedules.warmup_lr(
            self.warmup,
            step,
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            ramp_steps=float(self.ramp_steps),
            slow_step=self.slow_step_value,
            fast_start=self.fast_start,
            xp=np if np.ndim(step) else schedules.SCALAR,
        )

    def loss_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Recorded losses as `(center_step, mean_loss, num_steps)` arrays."""
        sums = np.asarray(self._bin_sums, dtype=np.float64)
        counts = np.asarray(self._bin_counts, dtype=np.float64)
        centers = (np.arange(sums.size) + 0.5) * self._bin_width
        with np.errstate(invalid="ignore", divide="ignore"):
            return centers, sums / counts, counts

    # ------------------------------------------------------------------
    # Feeding losses.

    def step(self, loss: float) -> float:
        """Records the loss of one step; returns the LR of the next step."""
        return self.update(loss, num_steps=1)

    def update(self, loss: float, num_steps: int = 1) -> float:
        """Records the mean loss of the next `num_steps` steps.

        Args:
            loss: mean training loss over those steps (NaN/inf allowed: a
                non-finite loss during warmup ends it at once).
            num_steps: how many steps the mean covers, e.g. the chunk size
                with `steps_per_execution`.

        Returns:
            The LR of the next step.
        """
        _check_int("num_steps", num_steps, 1)
        return self._advance(float(loss), num_steps, known=True)

    def skip(self, num_steps: int = 1) -> float:
        """Advances over `num_steps` steps whose loss is unknown.

        They are recorded as missing (left out of every test) and trigger
        no decision, except the end of warmup at the cap. Returns the LR
        of the next step.
        """
        _check_int("num_steps", num_steps, 1)
        return self._advance(math.nan, num_steps, known=False)

    def _advance(self, loss: float, num_steps: int, known: bool) -> float:
        was_warmup = self.phase == WARMUP
        first_step = self._steps
        chunk_end = first_step + num_steps
        check_due = False
        while self._steps < chunk_end:
            bin_end = (len(self._bin_sums) + 1) * self._bin_width
            take = min(chunk_end, bin_end) - self._steps
            self._open_sum += loss * take
            self._open_count += take
            self._steps += take
            if self._steps == bin_end:
                check_due |= self._close_bin()
        # Unknown losses decide nothing; only the cap can end warmup.
        if known and not math.isfinite(loss) and self.phase == WARMUP:
            self._pending = None
            self._diverged(loss, first_step)
        elif known and not math.isfinite(loss) and not was_warmup:
            self._pending = None
            self._guard_divergence(loss)
        else:
            self._run_tests(
                loss if known else None, check_due, was_warmup, chunk_end
            )
        if was_warmup and self.phase == DECAY and not self._events:
            self._events.append(
                {
                    "step": self._switch_step,
                    "event": "switch",
                    "reason": "cap",
                    "lr_before": float(self.lr_at(self._switch_step - 1)),
                    "peak_lr": self._peak_lr,
                    "minimum_lr": self._minimum_lr,
                }
            )
        return self.lr

    def _run_tests(
        self, loss: float | None, check_due: bool, was_warmup: bool, end: int
    ) -> None:
        """At a test point: acts on the previous test, starts the next.

        A test's answer takes effect one test later, at the end `end` of
        the chunk that reaches the next test point (or at the cap, if that
        comes first): meanwhile it runs on a background thread, and the
        fixed delay keeps decisions the same however long it takes. The
        test at the cap acts at once, since nothing comes after it. `loss`
        is `None` for unknown losses, which start no test.
        """
        cap = self._switch_step
        # Only warmup tests are pending: a switch or a non-finite loss
        # drops the answer of the last one.
        if self._pending is not None and (check_due or end >= cap):
            pending, self._pending = self._pending, None
            self._apply_test(pending.result(), min(end, cap))
        if loss is None or not check_due:
            return
        if not was_warmup:
            self._guard(loss)
        elif not self._events and end <= cap:
            # No decision has ended warmup (the previous test may have).
            self._start_test(end, at_once=end == cap)

    def _close_bin(self) -> bool:
        """Stores the open bin; returns whether a test is due at its end."""
        self._bin_sums.append(self._open_sum)
        self._bin_counts.append(self._open_count)
        self._open_sum = 0.0
        self._open_count = 0.0
        if len(self._bin_sums) == self.max_bins:
            # An even number of aligned bins: merge neighbours pairwise.
            self._bin_sums = _pairwise_sum(self._bin_sums)
            self._bin_counts = _pairwise_sum(self._bin_counts)
            self._bin_width *= 2
        mark = self._steps // self.check_every
        if mark > self._check_mark:
            self._check_mark = mark
            return True
        return False

    def _start_test(self, effective: int, at_once: bool) -> None:
        """Starts a test of the losses recorded so far; with `at_once`,
        waits for it and acts on it from step `effective`."""
        centers, means, counts = self.loss_bins()
        if np.count_nonzero(np.isfinite(means)) < self.min_bins:
            return
        now = len(self._bin_sums) * self._bin_width
        key = self._num_checks
        self._num_checks += 1
        job = background.submit(
            _run_test,
            self.detector,
            centers,
            means,
            counts,
            now,
            self.check_every,
            # The last test to act before the cap: its smoothed minimum
            # sets the LR that warmup ends at there.
            now + self.check_every > self._switch_step,
            key,
            background=self.background,
        )
        if at_once:
            self._apply_test(job.result(), effective)
        else:
            self._pending = job

    def _apply_test(self, outcome: _TestOutcome, effective: int) -> None:
        """Acts on a test from step `effective`."""
        # With `fast_start == 1` the ramp has one speed: nothing to decide
        # (and no revision, so no device write, for nothing).
        if self.fast_start > 1.0 and self._slow_step is None and outcome.moving:
            self._slow_step = effective
            self._revision += 1
        if not outcome.ran:
            self._consecutive = 0
            self._last_probability = None
            return
        if not outcome.probabilities:
            # No point with a finite loss and noise: nothing was tested.
            self._consecutive = 0
            return
        self._detector_runs += 1
        self._last_probability = float(np.mean(outcome.probabilities))
        self._consecutive = self._consecutive + 1 if outcome.votes else 0
        now = outcome.now
        lrs = self.ramp_lr_at(np.asarray(outcome.minimum_x) * now)
        # A minimum at "now" maps to the LR of the step not yet run: cap it
        # at the LR of the last step run.
        last = self.ramp_lr_at(float(now - 1))
        self._minimum_lr = float(np.mean(np.minimum(lrs, last)))
        peak_lr = self.peak_fraction * self._minimum_lr
        if self._consecutive >= self.patience:
            self._switch("minimum", peak_lr, effective)
        elif outcome.exploded:
            # The loss climbed back to its starting level (an explosion, or
            # a network that died at chance): waiting for `patience` tests
            # would let the LR grow further into that regime. Land at most
            # at half the LR of the last step run: when the loss was still
            # falling right up to the cliff, the smoothed minimum sits at
            # its edge and is no safe LR.
            self._switch(
                "explosion",
                self.peak_fraction * min(self._minimum_lr, 0.5 * last),
                effective,
            )
        elif peak_lr != self._peak_lr:
            # Provisional: if the cap comes first, warmup ends at the LR of
            # the smoothed minimum rather than at the overshoot.
            self._peak_lr = peak_lr
            self._revision += 1

    def _diverged(self, loss: float, first_step: int) -> None:
        """A non-finite loss during warmup: end it now, at a safe LR.

        The safe LR is the LR at the smoothed loss minimum of the latest
        test (or, before any test, at the lowest recorded loss), and at most
        half the LR of the last step with a finite loss.
        """
        now = self._steps
        good = float(self.lr_at(first_step - 1)) if first_step else self.min_lr
        safe = 0.5 * good
        lowest = self._minimum_lr
        if lowest is None:
            centers, means, _ = self.loss_bins()
            finite = np.isfinite(means)
            if np.any(finite):
                best = centers[finite][int(np.argmin(means[finite]))]
                lowest = float(self.lr_at(best))
        if lowest is not None:
            safe = min(safe, self.peak_fraction * lowest)
        warnings.warn(
            f"AutoLR: non-finite loss ({loss}) at step {now - 1} with LR "
            f"{float(self.lr_at(now - 1)):.4g}; warmup ends now and the LR "
            f"rolls back to {safe:.4g}.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._switch("divergence", safe, now)

    def _guard(self, loss: float) -> None:
        """During decay: restarts it at half the LR if the loss blew up.

        A loss back at its starting level (90 % of the way up from its
        lowest, as in warmup: a network that died) means the LR is too
        high for the long run even though the warmup's loss curve
        tolerated it. A smaller rise is left alone: right after the switch
        a short rise is common and passes. The decay restarts now, from
        half the LR of the last step run (`_rescue`); the Keras callback
        also puts back the weights kept at the lowest loss. Unlike a
        warmup test, this check runs on the training thread and acts at
        once: it stops at the first condition that fails, and the first
        (is the loss back up?) is a few comparisons.

        One blow-up, one restart: a restart waits `patience` tests after
        the switch or the previous restart (a rise must last), and after a
        restart a blow-up counts again only once the loss has come back
        below the starting level in between. A network that stays dead is
        not helped by halving the LR every step.
        """
        now = self._steps
        start = self.decay_start
        if now >= self.total_steps or (
            now < start + self.patience * self.check_every
        ):
            return  # Nothing left to rescue, or too soon after the last.
        centers, means, counts = self.loss_bins()
        since = max(now - self.check_every, start)
        if _blew_up(centers, means, counts, start, since, self._restarted()):
            self._rescue("explosion", loss, now)

    def _guard_divergence(self, loss: float) -> None:
        """During decay: a non-finite loss restarts the decay now."""
        if self._steps >= self.total_steps:
            return
        if self._restarted():
            centers, means, _ = self.loss_bins()
            progress = _progress(means)
            if not _recovered(centers, means, self.decay_start, progress):
                return
        self._rescue("divergence", loss, self._steps)

    def _restarted(self) -> bool:
        return any(e["event"] == "rescue" for e in self._events)

    def _rescue(self, reason: str, loss: float, step: int) -> None:
        """Restarts the decay at step `step` from half the LR before it."""
        lr_before = float(self.lr_at(step - 1))
        peak = 0.5 * lr_before
        self._revision += 1
        self._events.append(
            {
                "step": step,
                "event": "rescue",
                "reason": reason,
                "lr_before": lr_before,
                "peak_lr": peak,
                "loss": _to_json(loss),
            }
        )
        what = {
            "divergence": "became non-finite",
            "explosion": "climbed back to its starting level",
        }[reason]
        warnings.warn(
            f"AutoLR: the loss {what} during decay (step {step - 1}, LR "
            f"{lr_before:.4g}); the decay restarts at LR {peak:.4g}.",
            RuntimeWarning,
            stacklevel=2,
        )

    def at_lowest_loss(self, window: int = 8) -> bool:
        """Whether the loss is now within noise of its lowest level.

        Compares running medians over `window` finite bins: the latest is
        at most two noise standard deviations of a single bin above the
        lowest (the lowest of many running medians is itself a low draw).
        Medians, not single bins or means: the lowest single bin of a long,
        noisy record is an outlier that later losses rarely reach. A median
        also lags a sudden rise by half its window, so the latest bin
        itself must be within three noise standard deviations too: weights
        that have just started to blow up are not worth keeping. Used to
        decide when the current weights are worth keeping to fall back to.
        """
        if not self._bin_sums:
            return False
        means = np.divide(self._bin_sums, self._bin_counts)
        if not np.isfinite(means[-1]):
            return False
        finite = means[np.isfinite(means)]
        running = _running_medians(finite, min(window, finite.size))
        lowest, noise = np.min(running), _noise(finite)
        return bool(
            running[-1] <= lowest + 2.0 * noise
            and means[-1] <= lowest + 3.0 * noise
        )

    def _switch(self, reason: str, peak_lr: float, step: int) -> None:
        lr_before = float(self.lr_at(step - 1))
        self._switch_step = step
        self._peak_lr = float(peak_lr)
        self._revision += 1
        self._events.append(
            {
                "step": step,
                "event": "switch",
                "reason": reason,
                "lr_before": lr_before,
                "peak_lr": self._peak_lr,
                "minimum_lr": self._minimum_lr,
            }
        )


def detector_inputs(
    means: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The bin means as the test sees them, and the noise of each bin.

    The loss is far noisier where it falls fast, or near the cliff, than on
    the initial plateau: each bin gets the noise of its own neighbourhood
    (`local_noise`), in the spike filter and in the test. One bad batch is
    neither a minimum nor an explosion (`despike`).

    Returns:
        `(despiked means, noise std of each bin, relative noise variances
        for the detector)`; the variances are `None` (the same noise everywhere)
        when a record of exactly repeated losses has no noise to compare.
    """
    noise = local_noise(means)
    finite = noise[np.isfinite(noise)]
    variance = None
    if finite.size and np.all(finite > 0):
        # Relative variances are all the detector needs; relative to the
        # largest, they cannot overflow.
        variance = (noise / np.max(finite)) ** 2
    return despike(means, scale=noise), noise, variance


def despike(
    means: np.ndarray, half_window: int = 3, scale: np.ndarray | None = None
) -> np.ndarray:
    """Replaces isolated outliers by what their neighbourhood predicts.

    A Hampel filter: a bin further than 5 robust standard deviations from
    the median of the `2 * half_window + 1` bins centred on it is replaced
    by that median. The standard deviation is `scale`, one per bin
    (`local_noise(means)` if not given). The last `half_window` bins have
    no right neighbours: each is compared with a robust linear
    extrapolation of the bins before it (median level plus median slope),
    so that a steady trend at the end is not mistaken for an outlier. One
    bad batch is not a loss minimum, but a rise that lasts several bins
    moves the medians with it and is kept.
    Non-finite values pass through (the detector leaves them out).
    """
    n = means.size
    width = 2 * half_window + 1
    if n < width + half_window:
        return means
    if scale is None:
        scale = local_noise(means)
    if not np.any(scale > 0):
        return means
    expected = np.full(n, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(means, width)
    # NumPy's nanmedian is ~10x slower than median: only where needed.
    if np.isfinite(means).all():
        median = _median
    else:
        median = functools.partial(np.nanmedian, axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # All-NaN windows.
        expected[half_window : n - half_window] = median(windows)
        for i in range(n - half_window, n):
            before = means[i - width : i]
            slope = median(np.diff(before))
            expected[i] = median(before) + slope * (half_window + 1)
    spikes = np.abs(means - expected) > 5.0 * scale  # False where NaN.
    return np.where(spikes, expected, means)


def local_noise(means: np.ndarray, half_window: int = 8) -> np.ndarray:
    """Robust std of each bin, from the bins around it.

    `_noise` of the `2 * half_window` successive differences nearest to
    each bin (a window of fixed size, shifted inwards at both ends). The
    noise of a training loss is not constant: on the plateau at the start
    it is a fraction of what it is where the loss falls fast or where the
    LR nears the cliff, and a single figure for the whole record makes
    every ordinary wobble of the noisy stretches look significant. At
    least a quarter of the noise of the whole record, so that a window of
    nearly equal losses cannot claim near-certainty. Non-finite bins are
    left out of the differences and get NaN; a record of exactly repeated
    losses gets 0 everywhere.
    """
    out = np.full(means.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(means))
    level = means[finite]
    overall = _noise(level)
    width = 2 * half_window
    if level.size < width + 1:
        out[finite] = overall
        return out
    diffs = np.diff(level)
    windows = np.lib.stride_tricks.sliding_window_view(diffs, width)
    centre = _median(windows)[:, None]
    mad = _median(np.abs(windows - centre))
    local = 1.4826 * mad / np.sqrt(2)
    # Bin i (of level) takes the window of differences starting at i - h,
    # shifted to stay inside.
    start = np.clip(np.arange(level.size) - half_window, 0, local.size - 1)
    floor = 0.25 * (overall if overall > 0 else np.max(local))
    out[finite] = np.maximum(local[start], floor)
    return out


def _rise(means: np.ndarray, noise: np.ndarray, window: int = 8) -> float:
    """How far the loss now is above its lowest level, in noise std.

    The median of the last `window` finite bins minus the lowest median of
    `window` consecutive finite bins, over the local noise std of the last
    bin; 0 while the latest median is the lowest (the loss still falls),
    or with at most `window` finite bins. A vote needs more than 2: a
    median of 8 has a standard deviation of about 0.44 of a bin's, and the
    lowest of many running medians is itself a low draw (at 1, a long flat
    stretch passed for a rise about one test in four).
    """
    finite = np.isfinite(means)
    level = means[finite]
    if level.size < window + 1:
        return 0.0
    running = _running_medians(level, window)
    excess = float(running[-1] - np.min(running))
    if excess <= 0.0:
        return 0.0
    scale = float(noise[finite][-1])
    return excess / scale if scale > 0.0 else math.inf


def _running_medians(level: np.ndarray, window: int) -> np.ndarray:
    """Medians of every `window` consecutive values."""
    windows = np.lib.stride_tricks.sliding_window_view(level, window)
    return _median(windows)


def _median(values: np.ndarray) -> Any:
    """`np.median` over the last axis, for finite values only.

    A sort and two picks: 2 to 40 times faster than NumPy's general median
    on the short arrays and narrow windows of a test, where NumPy's
    overhead is most of the cost.
    """
    ordered = np.sort(values, axis=-1)
    n = ordered.shape[-1]
    return 0.5 * (ordered[..., (n - 1) // 2] + ordered[..., n // 2])


def _noise(level: np.ndarray) -> float:
    """Robust std of one bin: MAD of successive differences, over sqrt 2.

    Differences cancel a smooth trend, which a median filter's residuals
    would not measure (they are exactly 0 on a monotone stretch).
    """
    if level.size < 3:
        return 0.0
    diffs = np.diff(level)
    mad = _median(np.abs(diffs - _median(diffs)))
    return float(1.4826 * mad / np.sqrt(2))


@dataclasses.dataclass(frozen=True, eq=False)
class _Progress:
    """How far warmup has brought the recorded loss (compared by identity:
    it holds an array)."""

    start: float  # Median of the first 8 finite bins.
    recent: float  # Median of the last 8 finite bins.
    lowest: float  # Lowest bin.
    level: np.ndarray  # The finite bins.

    @functools.cached_property
    def noise(self) -> float:
        """Robust std of one bin, `_noise`: computed only when asked (the
        decay guard rarely needs it)."""
        return _noise(self.level)

    @property
    def moving(self) -> bool:
        """The loss has started to fall: the median of the last 8 bins is
        more than 3 noise standard deviations below that of the first 8
        (medians of 8, so about 5 standard deviations of their
        difference)."""
        return self.start - self.recent > 3.0 * self.noise

    @property
    def clear(self) -> bool:
        """The loss fell by more than 8 noise standard deviations."""
        return self.start - self.lowest > 8.0 * self.noise

    def lost(self, current: float, fraction: float = 0.9) -> bool:
        """`current` is back `fraction` of the way up to the start."""
        return current >= self.lowest + fraction * (self.start - self.lowest)


def _progress(means: np.ndarray) -> _Progress | None:
    level = means[np.isfinite(means)]
    if level.size < 8:
        return None
    return _Progress(
        float(_median(level[:8])),
        float(_median(level[-8:])),
        float(np.min(level)),
        level,
    )


@dataclasses.dataclass(frozen=True)
class _TestOutcome:
    """What one test found in the losses recorded up to step `now`."""

    now: int
    moving: bool  # The loss has started to fall (ends a fast start).
    ran: bool = False  # The GP ran (the loss had clearly fallen, or last
    # test before the cap).
    exploded: bool = False  # The loss is back at its starting level.
    votes: bool = False  # The GP and the losses agree: past the minimum.
    probabilities: tuple[float, ...] = ()
    minimum_x: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        state = dataclasses.asdict(self)
        state["probabilities"] = list(self.probabilities)
        state["minimum_x"] = list(self.minimum_x)
        return state

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> _TestOutcome:
        return cls(
            **{
                **state,
                "probabilities": tuple(state["probabilities"]),
                "minimum_x": tuple(state["minimum_x"]),
            }
        )


def _run_test(
    detector: MinimumDetector,
    centers: np.ndarray,
    raw: np.ndarray,
    counts: np.ndarray,
    now: int,
    check_every: int,
    at_cap: bool,
    key: int,
) -> _TestOutcome:
    """The statistics and GP test of one test point: a pure function of
    the bins up to step `now`, run off the training thread."""
    means, noise, variance = detector_inputs(raw)
    # A minimum only counts once the loss has clearly fallen: a bump or
    # noise on the initial plateau is not the minimum of the LR curve.
    progress = _progress(means)
    made_progress = progress is not None and progress.clear
    moving = progress is not None and progress.moving
    if not (made_progress or at_cap):
        # Nothing the GP says can count before the loss has clearly
        # fallen. The GP is most of a test's cost: it runs from then on,
        # and at the last test before the cap, whose smoothed minimum sets
        # the LR that warmup ends at there. (Not only where the loss has
        # risen above its lowest: the Keras adapter keeps weights at every
        # test once the GP sees the minimum coming, and those copies are
        # what a rollback restores. In the quality benchmark, running the
        # GP only after a rise left the 12 switch decisions as they were,
        # but lost 0.5 and 0.15 points in 2 runs for older copies.)
        return _TestOutcome(now=now, moving=moving)
    recent = np.isfinite(means) & (centers > now - check_every)
    exploded = (
        made_progress
        and np.any(recent)
        and (
            progress.lost(np.average(means[recent], weights=counts[recent]))
            # Two bins in a row at the start level are no spike: the
            # filter would hold them back until the rise moves its
            # medians, while the LR grows further past the cliff.
            or all(progress.lost(v) for v in raw[np.isfinite(raw)][-2:])
        )
    )
    # The GP's verdict counts only if the recorded losses agree that the
    # loss has risen (more than 2 noise std, see `_rise`): near "now" its
    # posterior mean reverts towards the mean of the whole record (the
    # high plateau), and after a steep fall it rings below the knee, both
    # of which can pass for a minimum behind us.
    rise = _rise(means, noise) if made_progress else 0.0
    detection = detector.test(
        centers / now, means, counts, key=key, noise=variance
    )
    return _TestOutcome(
        now=now,
        moving=moving,
        ran=True,
        exploded=bool(exploded),
        votes=bool(detection.past_minimum and rise > 2.0),
        probabilities=tuple(float(p) for p in detection.probabilities),
        minimum_x=tuple(float(x) for x in detection.minimum_x),
    )


def _blew_up(
    centers: np.ndarray,
    means: np.ndarray,
    counts: np.ndarray,
    start: int,
    since: int,
    restarted: bool,
) -> bool:
    """Whether the loss since step `since` is back at its starting level,
    after a clear fall (and, after a restart at step `start`, a recovery
    since). Cheapest condition first: the loss is rarely back up."""
    progress = _progress(means)
    if progress is None:
        return False
    recent = np.isfinite(means) & (centers > since)
    if not np.any(recent) or not progress.lost(
        np.average(means[recent], weights=counts[recent])
    ):
        return False
    if restarted and not _recovered(centers, means, start, progress):
        return False
    return progress.clear


def _recovered(
    centers: np.ndarray, means: np.ndarray, start: int, progress: _Progress
) -> bool:
    """Whether the loss came back below its starting level after step
    `start` (the last restart)."""
    after = np.isfinite(means) & (centers > start)
    return bool(
        progress is not None
        and np.any(after)
        and not progress.lost(np.min(means[after]))
    )


def _pairwise_sum(values: list[float]) -> list[float]:
    return [a + b for a, b in zip(values[::2], values[1::2], strict=True)]


def _to_json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _from_json(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < minimum
    ):
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r}"
        )


def _check_float(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(
        value, bool
    )
    ok = ok and math.isfinite(value) and value <= high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(
            f"Argument `{name}` must be a finite number in {bounds}. "
            f"Received: {name}={value!r}"
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {choices}. "
            f"Received: {name}={value!r}"
        )
