"""The paper's optimisation recipe: AdamW with an rsqrt schedule (big_vision)."""

import math
import numbers

import keras
from keras import ops


def _check_number(name, value, minimum, maximum=None, inclusive=True):
    """Raises ValueError unless `value` is a finite real number in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if value < minimum or (not inclusive and value == minimum):
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    if maximum is not None and value >= maximum:
        raise ValueError(f"{name} must be below {maximum}, got {value!r}.")


def _check_steps(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number of steps >= {minimum}, got {value!r}.")


@keras.saving.register_keras_serializable(package="keras_silc")
class RsqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Reciprocal-square-root decay with linear warm-up and linear cool-down.

    big_vision's `decay_type="rsqrt"`:

        lr(step) = base * min(1, step / warmup)                      # warm-up
                        * (1 / sqrt((step - warmup + timescale) / timescale)
                           if step > warmup else 1)                    # rsqrt
                        * clip((total - step) / cooldown, 0, 1)        # cool-down

    Args:
        learning_rate: float. Base (peak) learning rate.
        warmup_steps: int. Linear warm-up length; 0 for none.
        cooldown_steps: int. Linear cool-down length, ending at `total_steps`;
            0 for none.
        total_steps: int or None. Required when `cooldown_steps > 0`.
        timescale: int. Steps over which the rsqrt decay halves the rate (by 1/sqrt 2
            every doubling past it). Defaults to 10000.
    """

    def __init__(
        self,
        learning_rate=1e-3,
        warmup_steps=0,
        cooldown_steps=0,
        total_steps=None,
        timescale=10_000,
    ):
        _check_number("learning_rate", learning_rate, minimum=0.0, inclusive=False)
        _check_number("timescale", timescale, minimum=0.0, inclusive=False)
        _check_steps("warmup_steps", warmup_steps, 0)
        _check_steps("cooldown_steps", cooldown_steps, 0)
        if total_steps is not None:
            _check_steps("total_steps", total_steps, 1)
        if cooldown_steps and not total_steps:
            raise ValueError("RsqrtSchedule needs total_steps when cooldown_steps > 0.")
        if total_steps is not None and warmup_steps + cooldown_steps > total_steps:
            raise ValueError(
                f"warmup_steps ({warmup_steps}) + cooldown_steps ({cooldown_steps}) "
                f"exceed total_steps ({total_steps})."
            )
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.cooldown_steps = cooldown_steps
        self.total_steps = total_steps
        self.timescale = timescale

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        decayed = ops.where(
            step > warmup,
            1.0 / ops.sqrt((step - warmup + self.timescale) / self.timescale),
            1.0,
        )
        lr = self.learning_rate * decayed
        if self.warmup_steps:
            lr = lr * ops.minimum(1.0, step / warmup)
        if self.cooldown_steps:
            remaining = (float(self.total_steps) - step) / float(self.cooldown_steps)
            lr = lr * ops.clip(remaining, 0.0, 1.0)
        return lr

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "cooldown_steps": self.cooldown_steps,
            "total_steps": self.total_steps,
            "timescale": self.timescale,
        }


def paper_optimizer(
    learning_rate=1e-3,
    warmup_steps=50_000,
    cooldown_steps=50_000,
    total_steps=None,
    timescale=10_000,
    weight_decay=1e-4,
    beta_1=0.9,
    beta_2=0.95,
    global_clipnorm=1.0,
):
    """AdamW on the rsqrt schedule, with global-norm gradient clipping.

    The defaults follow the paper (base lr 1e-3, 50k warm-up and 50k cool-down) and
    big_vision's SigLIP configs (weight decay 1e-4, beta_2 = 0.95, clip at norm 1).
    Which variables get weight decay is decided by `SilcModel.compile`: only weight
    matrices, not biases, norms, embeddings, the MAP probe or the temperature.
    """
    _check_number("weight_decay", weight_decay, minimum=0.0)
    _check_number("beta_1", beta_1, minimum=0.0, maximum=1.0)
    _check_number("beta_2", beta_2, minimum=0.0, maximum=1.0)
    if global_clipnorm is not None:
        _check_number("global_clipnorm", global_clipnorm, minimum=0.0, inclusive=False)
    schedule = RsqrtSchedule(
        learning_rate,
        warmup_steps=warmup_steps,
        cooldown_steps=cooldown_steps,
        total_steps=total_steps,
        timescale=timescale,
    )
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        global_clipnorm=global_clipnorm,
    )
