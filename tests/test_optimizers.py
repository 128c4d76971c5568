"""The rsqrt schedule against big_vision's formula written in numpy."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_silc import RsqrtSchedule
from keras_silc import paper_optimizer


def _big_vision_rsqrt(step, base, warmup, cooldown, total, timescale):
    lr = base
    if step > warmup:
        lr = lr / np.sqrt((step + timescale - warmup) / timescale)
    if warmup:
        lr = lr * min(1.0, step / warmup)
    if cooldown:
        lr = lr * min(1.0, (total - step) / cooldown)
    return max(lr, 0.0)


@pytest.mark.parametrize("warmup,cooldown,total", [(100, 200, 1000), (0, 0, None), (50, 0, None)])
def test_rsqrt_schedule_matches_formula(warmup, cooldown, total):
    schedule = RsqrtSchedule(1e-3, warmup, cooldown, total, timescale=300)
    for step in [0, 1, 25, 50, 99, 100, 101, 400, 799, 800, 950, 1000, 1200]:
        expected = _big_vision_rsqrt(step, 1e-3, warmup, cooldown, total or 10**9, 300)
        np.testing.assert_allclose(to_numpy(schedule(step)), expected, rtol=1e-5, atol=1e-12)


def test_schedule_serializes_and_rejects_bad_settings():
    schedule = RsqrtSchedule(2e-3, 10, 20, 100)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert clone.get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="needs total_steps"):
        RsqrtSchedule(1e-3, 10, 20, None)
    with pytest.raises(ValueError, match="exceed total_steps"):
        RsqrtSchedule(1e-3, 60, 60, 100)


def test_paper_optimizer_is_adamw_with_clipping():
    optimizer = paper_optimizer(total_steps=200_000)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.global_clipnorm == 1.0
    assert isinstance(optimizer._learning_rate, RsqrtSchedule)
    assert optimizer._learning_rate.get_config()["warmup_steps"] == 50_000
    assert float(to_numpy(optimizer.learning_rate)) == 0.0  # step 0 of the warm-up


def test_bad_optimizer_settings_are_refused_with_their_name():
    cases = [
        ({"learning_rate": "1e-3"}, "learning_rate must be a finite number, got '1e-3'"),
        ({"learning_rate": -10.0}, "learning_rate must be > 0.0"),
        ({"warmup_steps": -5}, "warmup_steps must be a whole number of steps >= 0"),
        ({"total_steps": "100"}, "total_steps must be a whole number of steps >= 1"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0.0"),
        ({"beta_2": 2.0}, "beta_2 must be below 1.0"),
        ({"global_clipnorm": 0.0}, "global_clipnorm must be > 0.0"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            paper_optimizer(**{"warmup_steps": 0, "cooldown_steps": 0, **arguments})


def test_the_demo_schedule_fits_any_number_of_steps():
    from keras_silc.experiments.fashion import recipe_for

    for steps in range(1, 60):
        recipe = recipe_for(steps)
        assert recipe["warmup_steps"] + recipe["cooldown_steps"] <= steps
        RsqrtSchedule(1e-3, **recipe)
    # Past a few steps: warm-up 10%, cool-down 20%.
    assert recipe_for(1500) == {"warmup_steps": 150, "cooldown_steps": 300, "total_steps": 1500}
