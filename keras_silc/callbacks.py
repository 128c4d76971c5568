"""Callbacks of a long `fit`: a guard that stops a NaN or exploding loss with a message,
and TensorBoard scalars every few steps.

`DivergenceGuard` is what `keras_silc.training.fit_with_checkpoints` (and so the
`keras-silc` command line) installs; `with_divergence_guard(callbacks)` adds it to a
callback list unless one is there, for `SilcModel.fit` to install it by default.
`TensorBoardScalars` is the command line's `--log-every`.
"""

import math
import numbers

import keras
import numpy as np

from keras_silc.checks import check_folder_path


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
        # NaN would switch the explosion check off without a word (every comparison is False).
        if isinstance(max_loss, bool) or not (isinstance(max_loss, numbers.Real) and max_loss > 0):
            raise ValueError(
                f"max_loss must be a positive number (math.inf checks finiteness only), got "
                f"{max_loss!r}."
            )
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


def _scalar(value):
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


class TensorBoardScalars(keras.callbacks.Callback):
    """Writes the training logs to TensorBoard every `every_n_steps` optimizer steps.

    Each point is the mean of a log over the steps since the previous point (Keras's logs
    are running means over the epoch; this takes their differences, across epoch ends
    too), at the optimizer step, so that the points of a resumed run continue those of the
    first. With every point goes `learning_rate`, the rate of the last of those steps. The
    logs are read only at the points (on JAX reading them waits for the step to finish).
    Keras's own `TensorBoard` callback logs per epoch, or per batch from step 0 again after
    a resume.

    Args:
        log_dir: str. The folder of the event file (any `tf.io.gfile` path).
        every_n_steps: int. The steps between points. Defaults to 10.
    """

    def __init__(self, log_dir, every_n_steps=10):
        super().__init__()
        check_folder_path(log_dir, "log_dir")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int, got {every_n_steps!r}.")
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self._writer = None
        self._epoch_start = 0
        self._reset_window()

    def _reset_window(self):
        self._window_sums = {}  # log -> sum over the window's steps of past epochs
        self._window_steps = 0
        self._epoch_sums = {}  # log -> sum over this epoch's steps up to the last point
        self._epoch_steps = 0

    def on_train_begin(self, logs=None):
        self._reset_window()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = epoch * self.params["steps"]
        self._epoch_sums, self._epoch_steps = {}, 0

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start + batch + 1
        if step % self.every_n_steps or not logs:
            return
        steps_so_far = batch + 1
        means = {}
        for name, value in logs.items():
            total = _scalar(value) * steps_so_far  # the sum over this epoch's steps
            window = total - self._epoch_sums.get(name, 0.0) + self._window_sums.get(name, 0.0)
            means[name] = window / (steps_so_far - self._epoch_steps + self._window_steps)
            self._epoch_sums[name] = total
        self._epoch_steps = steps_so_far
        self._window_sums, self._window_steps = {}, 0
        means["learning_rate"] = self._learning_rate(step - 1)
        self._write(means, step)

    def on_epoch_end(self, epoch, logs=None):
        # The steps after the epoch's last point carry over into the next point.
        steps = self.params["steps"]
        for name, value in (logs or {}).items():
            rest = _scalar(value) * steps - self._epoch_sums.get(name, 0.0)
            self._window_sums[name] = self._window_sums.get(name, 0.0) + rest
        self._window_steps += steps - self._epoch_steps

    def _learning_rate(self, iteration):
        """The rate the optimizer applied at `iteration` (0-based), or None."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        rate = getattr(optimizer, "_learning_rate", None)
        if rate is None:
            return None
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            return _scalar(rate(iteration))
        return _scalar(rate)

    def _write(self, scalars, step):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for name, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(name, value, step=step)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
