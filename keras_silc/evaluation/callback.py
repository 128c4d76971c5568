"""Evaluations during `fit`, written into the epoch logs (History, CSVLogger, Keras's own
TensorBoard callback), with `log_dir` straight into TensorBoard, and with `records` into a
CSV file of every evaluation."""

import csv
import functools
import io
import os

import keras

from keras_silc import storage
from keras_silc.checks import check_folder_path
from keras_silc.checks import positive_int


def _name(fn):
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


class EvaluationCallback(keras.callbacks.Callback):
    """Runs evaluations on `self.model` every N epochs (or every N optimizer steps).

    An evaluation is a callable `fn(model) -> dict of floats`, e.g. a `functools.partial` of
    `zero_shot_classification` with everything but the model bound. Its results go into the
    epoch logs as "<prefix><name>/<metric>" (so they land in `History.history`), into
    `self.latest`/`self.results`, and, with `log_dir`, into a TensorBoard event file at the
    optimizer step.

    Args:
        evaluations: a dict name -> fn(model), or a list of such callables (named by their
            function's `__name__`).
        every_n_epochs: run after every N-th epoch (ignored when `every_n_steps` is set).
        every_n_steps: run every N optimizer steps instead; each epoch's logs then carry the
            latest results.
        log_dir: a TensorBoard log directory (a `tf.summary` file writer), or None.
        prefix: prepended to every key (default "eval/").
        records: a CSV path (any `tf.io.gfile` path), or None: one row per evaluation, its
            optimizer step and results, rewritten atomically after each. A resumed run
            drops the rows past the step it resumes from.
        at_train_end: also evaluate when training ends, unless the last evaluation was at
            that step.
        update_logs: put the latest results into the epoch logs (History, CSVLogger). Off
            where the epochs' keys must not change (a CSVLogger keeps its first epoch's).

    Example:

    ```python
    evaluate = functools.partial(
        evaluation.zero_shot_classification,
        tokenizer=tokenizer, images=x, labels=y, class_names=names)
    callback = EvaluationCallback({"zero_shot": evaluate}, log_dir="runs/x/tensorboard")
    history = model.fit(data, epochs=10, callbacks=[callback])
    history.history["eval/zero_shot/top1"]
    ```
    """

    def __init__(
        self,
        evaluations,
        every_n_epochs=1,
        every_n_steps=None,
        log_dir=None,
        prefix="eval/",
        records=None,
        at_train_end=False,
        update_logs=True,
    ):
        super().__init__()
        if callable(evaluations):
            evaluations = [evaluations]
        if (
            evaluations is None
            or isinstance(evaluations, str)
            or not hasattr(evaluations, "__iter__")
        ):
            raise ValueError(
                "evaluations must be a callable fn(model) -> dict of floats, a list of them or "
                f"a dict name -> fn, got {evaluations!r}."
            )
        if not isinstance(evaluations, dict):
            named = {}
            for fn in evaluations:
                name, i = _name(fn), 1
                while name in named:
                    i += 1
                    name = f"{_name(fn)}_{i}"
                named[name] = fn
            evaluations = named
        for name, fn in evaluations.items():
            if not callable(fn):
                raise TypeError(f"Evaluation {name!r} is not callable: {fn!r}.")
        # 0 never evaluated and -1 evaluated every epoch, without a word.
        every_n_epochs = positive_int(every_n_epochs, "every_n_epochs")
        if every_n_steps is not None:
            every_n_steps = positive_int(every_n_steps, "every_n_steps")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a str (e.g. 'eval/' or ''), got {prefix!r}.")
        if log_dir is not None:
            check_folder_path(log_dir, "log_dir")
        if records is not None and not isinstance(records, str | os.PathLike):
            raise ValueError(f"records must be a path or None, got {records!r}.")
        if records is not None and os.path.isdir(records):
            raise ValueError(f"records {os.fspath(records)!r} is a folder; give a CSV file path.")
        self.evaluations = dict(evaluations)
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.log_dir = log_dir
        self.prefix = prefix
        self.records = records
        self.at_train_end = at_train_end
        self.update_logs = update_logs
        self._rows = []  # the records' rows: dicts with "step"
        self.latest = {}
        self.results = []  # (step, results) of every run
        self._writer = None
        self._step = 0
        self._epoch_start = 0

    def evaluate(self, step=None):
        """Runs every evaluation now; returns and records the prefixed results."""
        model = self.model
        if step is None:
            step = self._optimizer_step(model)
        results = {}
        for name, fn in self.evaluations.items():
            values = fn(model)
            if not isinstance(values, dict):
                raise TypeError(
                    f"Evaluation {name!r} returned {type(values).__name__}, not a dict."
                )
            for key, value in values.items():
                results[f"{self.prefix}{name}/{key}"] = float(value)
        self.latest = results
        self.results.append((step, results))
        if self.log_dir:
            self._write(results, step)
        if self.records:
            self._rows.append({"step": step, **results})
            self._write_records()
        return results

    def _read_records(self, up_to_step):
        """The records' rows up to `up_to_step` (a resumed run evaluates the rest again)."""
        if not storage.exists(self.records):
            return []
        rows = csv.DictReader(io.StringIO(storage.read_text(self.records), newline=""))
        return [
            {k: float(v) if k != "step" else int(v) for k, v in row.items() if v != ""}
            for row in rows
            if int(row["step"]) <= up_to_step
        ]

    def _write_records(self):
        columns = ["step"]
        for row in self._rows:
            columns += [key for key in row if key not in columns]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        storage.write_text_atomically(self.records, text.getvalue())

    def _write(self, results, step):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for key, value in results.items():
                tf.summary.scalar(key, value, step=step)
        self._writer.flush()

    @staticmethod
    def _optimizer_step(model):
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            return 0
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def on_train_begin(self, logs=None):
        self._step = self._optimizer_step(self.model)
        if self.records:
            self._rows = self._read_records(self._step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._step

    def on_train_batch_end(self, batch, logs=None):
        # The step comes from `batch` (the last step index of the epoch run so far, right
        # with steps_per_execution > 1), not from the optimizer: on JAX, touching
        # `self.model` mid-epoch syncs the whole training state to the host.
        step = self._epoch_start + batch + 1
        previous, self._step = self._step, step
        if self.every_n_steps and step // self.every_n_steps > previous // self.every_n_steps:
            self.evaluate(step)

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_steps:
            results = self.latest
        elif self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            results = self.evaluate()
        else:
            results = {}
        if logs is not None and self.update_logs:
            logs.update(results)

    def on_train_end(self, logs=None):
        if self.at_train_end:
            step = self._optimizer_step(self.model)
            last = self.results[-1][0] if self.results else None
            if last is None and self._rows:
                last = self._rows[-1]["step"]
            if last != step:
                self.evaluate(step)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
