from __future__ import annotations

import itertools
import math

import pytest

from proximity.training.schedule import CosineSchedule, warmup_steps_for


def test_warmup_rises_linearly_to_the_peak():
    schedule = CosineSchedule(peak_lr=1e-3, min_lr=1e-5, warmup_steps=10, total_steps=100)
    assert schedule.lr(0) == pytest.approx(1e-4)
    assert schedule.lr(4) == pytest.approx(5e-4)
    assert schedule.lr(9) == pytest.approx(1e-3)
    assert schedule.lr(10) == pytest.approx(1e-3)  # cosine starts at the peak


def test_cosine_decays_monotonically_to_the_minimum():
    schedule = CosineSchedule(peak_lr=3e-4, min_lr=1e-6, warmup_steps=10, total_steps=100)
    lrs = [schedule.lr(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert schedule.lr(55) == pytest.approx((3e-4 + 1e-6) / 2)  # halfway
    assert schedule.lr(100) == pytest.approx(1e-6)
    assert schedule.lr(1000) == pytest.approx(1e-6)  # past the end: stays at the minimum


def test_schedule_is_a_function_of_the_global_step():
    """A run resumed at step s (midtraining) asks the same function: its LR continues."""
    schedule = CosineSchedule(peak_lr=1e-3, min_lr=0.0, warmup_steps=5, total_steps=50)
    restored = CosineSchedule.from_state_dict(schedule.state_dict())
    assert [restored.lr(s) for s in range(20, 50)] == [schedule.lr(s) for s in range(20, 50)]


def test_warmup_steps_from_fraction_or_explicit():
    assert warmup_steps_for(61035, warmup_steps=None, warmup_fraction=0.1) == 6104
    assert warmup_steps_for(100, warmup_steps=7, warmup_fraction=0.1) == 7
    assert warmup_steps_for(100, warmup_steps=None, warmup_fraction=0.0) == 0
    schedule = CosineSchedule(peak_lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=4)
    assert schedule.lr(0) == 1.0 and math.isclose(schedule.lr(2), 0.5)
