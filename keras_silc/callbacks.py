"""Callbacks that guard a `fit`: a NaN or exploding loss stops training with a message.

`DivergenceGuard` is what `keras_silc.training.fit_with_checkpoints` (and so the
`keras-silc` command line) installs; `with_divergence_guard(callbacks)` adds it to a
callback list unless one is there, for `SilcModel.fit` to install it by default.
"""

import math

import keras
import numpy as np


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the last good checkpoint is intact."""


def divergence_message(what, batch, epoch):
    """The one message of a diverged run, for the guard and the command line alike."""
    return (
        f"The training loss {what} at batch {batch} of epoch {epoch + 1}. The last good "
        "checkpoint is intact; lower the learning rate (--set recipe.learning_rate=..., or "
        "fit_with_checkpoints(learning_rate=...)) and run the same command again: it resumes "
        "from that checkpoint with the new peak rate (the schedule's warm-up and decay stay "
        "as they were). If the loss was NaN from the start, check the data: images must be "
        "finite floats in [0, 1] and token ids below the vocabulary size."
    )


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with `TrainingDiverged` when the loss is not finite or explodes.

    It raises from `on_train_batch_end`, before the epoch's checkpoint is written, so the
    newest checkpoint on disk is the last good one. "Exploding" means the epoch's running
    mean loss exceeds `max_loss` (SILC's losses start near log(B) + log(K), so 1e4 is far
    beyond any healthy run). Reading the loss is one scalar per step, which Keras's
    progress bar reads anyway.

    Args:
        max_loss: float. The largest healthy loss; `math.inf` to check finiteness only.
            Defaults to 1e4.
    """

    def __init__(self, max_loss=1e4):
        super().__init__()
        self.max_loss = max_loss
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(keras.ops.convert_to_numpy(loss)))
        if not math.isfinite(loss) or loss > self.max_loss:
            what = "is not finite" if not math.isfinite(loss) else f"exploded to {loss:.4g}"
            raise TrainingDiverged(divergence_message(what, batch, self.epoch))


def with_divergence_guard(callbacks=None, max_loss=1e4):
    """`callbacks` (None, a list, or a `CallbackList`'s items) with a `DivergenceGuard`
    appended unless one is already there. The hook for `SilcModel.fit`:

        def fit(self, *args, callbacks=None, **kwargs):
            return super().fit(*args, callbacks=with_divergence_guard(callbacks), **kwargs)
    """
    callbacks = list(callbacks or [])
    if not any(isinstance(callback, DivergenceGuard) for callback in callbacks):
        callbacks.append(DivergenceGuard(max_loss))
    return callbacks
