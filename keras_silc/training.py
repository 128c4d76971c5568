"""Long runs that lose nothing on a fault: checkpoints, resume, and a divergence guard.

`fit_with_checkpoints` wraps `model.fit` with callbacks: every `steps_per_epoch` steps
the whole model (weights, EMA teacher, center, optimizer state, tokenizer) is saved as a
`.keras` file, written under a temporary name and renamed into place so that a kill never
leaves a truncated checkpoint; `CSVLogger` appends the history and `TensorBoardScalars`
logs the curves every few steps. Started again with the same arguments, it loads the newest
intact checkpoint and continues from its step with the data stream positioned where the
interrupted run left it, so it ends with the weights of an uninterrupted run. Started again
with a larger `total_steps`, it continues a finished run (see `fit_with_checkpoints`).

Every file goes through `tf.io.gfile` (`keras_silc.storage`): the output folder may be
local, a `gs://` bucket, or `ram://` in tests.
"""

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
import zipfile

import keras

from keras_silc import storage
from keras_silc.callbacks import DivergenceGuard
from keras_silc.callbacks import TensorBoardScalars
from keras_silc.callbacks import TrainingDiverged
from keras_silc.checks import positive_int

__all__ = [
    "CHECKPOINT_PATTERN",
    "DatasetBuilder",
    "DivergenceGuard",
    "TrainingDiverged",
    "check_model_file",
    "fit_with_checkpoints",
    "latest_checkpoint",
    "load_model_checked",
    "read_run_config",
    "save_model_atomically",
]

CHECKPOINT_PATTERN = "epoch-{epoch:05d}.keras"
RUN_CONFIG = "run_config.json"
# The schedule's step settings: a run continued for more steps gets new ones.
SCHEDULE_STEPS = ("warmup_steps", "cooldown_steps", "total_steps")


# ------------------------------------------------------------------ model files
def save_model_atomically(model, path):
    """`model.save(path)` that never leaves a truncated file at `path`.

    Keras writes a `.keras` zip in place, so a kill during the save leaves a damaged file
    under the final name. This writes a hidden temporary file in the same folder and
    renames it over `path` once it is complete (`keras_silc.storage`: atomic on a local
    disk; on a bucket the final name only ever holds the finished object). `path` may be
    on any file system `tf.io.gfile` reaches (`gs://...`): the model is then saved locally
    first and copied.
    """
    path = os.fspath(path)
    if storage.is_local(path):
        temporary = storage.temporary_name(path) + ".keras"
        try:
            model.save(temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return
    folder = tempfile.mkdtemp(prefix="keras_silc_")
    try:
        local = os.path.join(folder, os.path.basename(path))
        model.save(local)
        storage.copy_atomically(local, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_model_file(path, expected_class="SilcModel"):
    """Raises ValueError saying what is wrong with `path` as a saved `expected_class`.

    Checks, without building the model: the file exists and is not empty, is a complete
    zip archive (a save cut short by a kill leaves a truncated one), holds a Keras model
    (`config.json` and the weights), of class `expected_class` (None: any class). `path`
    may be on any file system `tf.io.gfile` reaches.
    """
    path = os.fspath(path)
    if not storage.exists(path):
        raise ValueError(f"No saved model at {path!r}.")
    if storage.isdir(path):
        raise ValueError(f"{path!r} is a folder, not a .keras file.")
    with storage.local_file(path) as local:
        _check_local_model_file(local, path, expected_class)


def _check_local_model_file(local, path, expected_class):
    """`check_model_file` of a local copy `local` of `path` (the name in messages)."""
    size = os.path.getsize(local)
    if size == 0:
        raise ValueError(f"{path!r} is empty (0 bytes): its save was cut short.")
    with open(local, "rb") as handle:
        head = handle.read(4)
    if not zipfile.is_zipfile(local):
        if head.startswith(b"PK"):
            raise ValueError(
                f"{path!r} is a truncated zip archive ({size} bytes): its save was cut short "
                "(the process was killed or the disk filled up)."
            )
        what = "an HDF5 file (a legacy .h5 model?)" if head == b"\x89HDF" else "not a zip archive"
        raise ValueError(f"{path!r} is not a .keras model file: it is {what}.")
    try:
        with zipfile.ZipFile(local) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ValueError(
                    f"{path!r} is a zip archive but not a .keras model file (no config.json)."
                )
            if not names & {"model.weights.h5", "model.weights.npz"}:
                raise ValueError(f"{path!r} holds no weights (no model.weights.h5).")
            damaged = archive.testzip()
            if damaged is not None:
                raise ValueError(f"{path!r} is damaged: {damaged!r} fails its checksum.")
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path!r} is a damaged zip archive: {error}.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path!r} has an unreadable config.json: {error}.") from None
    class_name = config.get("class_name") if isinstance(config, dict) else None
    if expected_class is not None and class_name != expected_class:
        raise ValueError(
            f"{path!r} holds a {class_name or 'model of unknown class'}, not a "
            f"{expected_class}: it is not a keras_silc model."
        )


def load_model_checked(path, expected_class="SilcModel"):
    """`keras.models.load_model(path)` after `check_model_file`; any failure is a
    ValueError that names the file and what is wrong with it. `path` may be on any file
    system `tf.io.gfile` reaches."""
    import keras_silc  # noqa: F401  (registers the classes for loading)
    import keras_silc.data.tokenizer  # noqa: F401

    path = os.fspath(path)
    check_model_file(path, expected_class)
    with storage.local_file(path) as local:
        try:
            model = keras.models.load_model(local)
        except Exception as error:  # Keras raises many types for a bad file
            raise ValueError(
                f"{path!r} could not be loaded ({type(error).__name__}: {error})."
            ) from None
    _finish_building(model)
    return model


def _finish_building(model):
    """Marks the weightless layers that loading left unbuilt (a tokenizer's inner
    keras-hub layer) as built. Otherwise `fit` builds the model from a first iterator
    over the dataset and trains from a second one, whose shuffle order differs: the
    resumed run would not see the batches of an uninterrupted one."""
    for layer in model._flatten_layers():
        if not layer.built and not layer.weights:
            layer.built = True


def _checkpoints(directory):
    """[(epoch, path)] of the `epoch-NNNNN.keras` files in `directory`, newest first."""
    found = []
    for path in storage.glob(storage.join(directory, "epoch-*.keras")):
        match = re.search(r"epoch-(\d+)\.keras$", path)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_checkpoint(directory):
    """(path, epoch) of the newest `epoch-NNNNN.keras` in `directory`, or (None, 0)."""
    found = _checkpoints(directory)
    if not found:
        return None, 0
    epoch, path = found[0]
    return path, epoch


def _load_newest_intact(checkpoint_dir):
    """(model, epoch) of the newest checkpoint that loads; a damaged one (a save cut short
    before atomic saves, a full disk) is skipped with a warning. (None, 0) if none loads."""
    for epoch, path in _checkpoints(checkpoint_dir):
        try:
            return load_model_checked(path), epoch
        except ValueError as error:
            warnings.warn(
                f"Skipping a damaged checkpoint: {error} Resuming from an older one.",
                stacklevel=3,
            )
            storage.rename(path, path + ".damaged")
    return None, 0


# Settings a resumed run may change: the peak learning rate (see
# `fit_with_checkpoints(learning_rate=)`), and the step count with the schedule's steps
# (a run continued for more steps).
def _comparable(run_config, steps_changed):
    config = json.loads(json.dumps(run_config))
    config.pop("learning_rate", None)
    recipe = config.get("overrides", {}).get("recipe") if isinstance(config, dict) else None
    dropped = ("learning_rate", *SCHEDULE_STEPS) if steps_changed else ("learning_rate",)
    if isinstance(recipe, dict):
        for key in dropped:
            recipe.pop(key, None)
    if steps_changed:
        config.pop("steps", None)
    return config


def read_run_config(output_dir):
    """The run config saved in `output_dir`, or None (none yet, or unreadable; with
    checkpoints beside it, `_check_same_run` refuses either)."""
    path = storage.join(output_dir, RUN_CONFIG)
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_text(path))
    except json.JSONDecodeError:
        return None


def _check_same_run(output_dir, run_config, trained_steps):
    """Refuses checkpoints in `output_dir` made with other settings (learning rate aside)
    or a step count below the `trained_steps` the newest checkpoint has run."""
    saved = read_run_config(output_dir)
    if saved is None:
        # Written before the first checkpoint, atomically: checkpoints without it were not
        # made by a run of this folder as it stands, and nothing can tell whose they are.
        state = "unreadable" if storage.exists(storage.join(output_dir, RUN_CONFIG)) else "missing"
        raise ValueError(
            f"{output_dir!r} holds checkpoints, but its {RUN_CONFIG} is {state}, so whether "
            "they belong to this run cannot be checked. Put back the run's "
            f"{RUN_CONFIG}, or choose a new --output."
        )
    steps = run_config.get("steps")
    if steps is not None and steps < trained_steps:
        raise ValueError(
            f"{output_dir!r} holds a checkpoint at step {trained_steps}, past the "
            f"{steps} steps asked for: a run can be continued for more steps, not cut "
            "short. Ask for more steps, or choose a new --output."
        )
    steps_changed = saved.get("steps") != steps
    saved, current = _comparable(saved, steps_changed), _comparable(run_config, steps_changed)
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise ValueError(
            f"{output_dir!r} holds checkpoints of a different run (differs in {changed}). "
            "Resume with the same settings (only the learning rate, and the step count of a "
            "run continued for more steps, may change), or choose a new --output."
        )


def _write_json_atomically(path, value):
    storage.write_text_atomically(path, json.dumps(value, indent=2))


def _schedule_of(model):
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    return optimizer, getattr(optimizer, "_learning_rate", None)


def _set_learning_rate(model, learning_rate):
    """Sets the peak learning rate of a loaded model's optimizer; returns the old one."""
    optimizer, schedule = _schedule_of(model)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        if not hasattr(schedule, "learning_rate"):
            raise ValueError(
                f"The optimizer's schedule {type(schedule).__name__} has no learning_rate to "
                "change on resume."
            )
        old = float(schedule.learning_rate)
        schedule.learning_rate = learning_rate
    else:
        old = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        optimizer.learning_rate = learning_rate
    if isinstance(getattr(model, "recipe", None), dict):
        model.recipe["learning_rate"] = learning_rate
    return old


def _set_schedule_steps(model, schedule):
    """Gives a loaded model's learning-rate schedule the step settings `schedule` (a dict
    of `SCHEDULE_STEPS`); returns {setting: (old, new)} of those that changed."""
    _, current = _schedule_of(model)
    unknown = sorted(set(schedule) - set(SCHEDULE_STEPS))
    if unknown:
        raise ValueError(f"schedule: unknown settings {unknown}; known: {list(SCHEDULE_STEPS)}.")
    if not isinstance(current, keras.optimizers.schedules.LearningRateSchedule) or not all(
        hasattr(current, key) for key in schedule
    ):
        raise ValueError(
            f"The checkpoint's optimizer has no schedule with {sorted(schedule)} "
            f"({type(current).__name__}); it cannot be continued with another schedule."
        )
    changed = {k: (getattr(current, k), v) for k, v in schedule.items() if getattr(current, k) != v}
    if changed:
        # The schedule's own checks (warm-up and cool-down within the total).
        type(current).from_config({**current.get_config(), **schedule})
        for key, (_, value) in changed.items():
            setattr(current, key, value)
        if isinstance(getattr(model, "recipe", None), dict):
            model.recipe.update({key: value for key, (_, value) in changed.items()})
    return changed


def _truncate_history(path, epochs):
    """Keeps the first `epochs` rows of history.csv (rows after the resumed checkpoint
    belong to epochs that are run again)."""
    if not storage.exists(path):
        return
    rows = list(csv.reader(io.StringIO(storage.read_text(path), newline="")))
    if len(rows) <= epochs + 1:
        return
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n").writerows(rows[: epochs + 1] if epochs else [])
    storage.write_text_atomically(path, text.getvalue())


def fit_with_checkpoints(
    build_model,
    build_dataset,
    total_steps,
    steps_per_epoch,
    output_dir,
    run_config=None,
    callbacks=(),
    verbose="auto",
    keep_checkpoints=2,
    max_loss=1e4,
    learning_rate=None,
    schedule=None,
    log_every=None,
):
    """Trains to `total_steps`, checkpointing every `steps_per_epoch` steps; resumes.

    What survives a kill at any moment: each checkpoint is written under a temporary name
    and renamed into place, so the newest `epoch-NNNNN.keras` is complete; a checkpoint
    damaged otherwise is skipped (renamed `*.damaged`) with a warning, and the run resumes
    from the newest intact one. `run_config.json` is written when training starts, after
    the model and data are built, and only binds a folder that holds checkpoints: a run
    that failed before its first checkpoint can be started again with other settings.

    A finished (or interrupted) run started again with a larger `total_steps` continues to
    it: the schedule is stretched, not appended to. From the checkpoint's step on, the
    learning rate follows the schedule given as `schedule` (the schedule of a run planned
    for the new total from its start, for the command line), so it rises again from the
    end of the first run's cool-down; the optimizer's moments carry on. The weights are not
    those of a run started with the larger total (its first steps had another schedule).
    `total_steps` can grow, never fall below a checkpoint's step.

    Args:
        build_model: `() -> compiled SilcModel`, called for a fresh run only.
        build_dataset: `(start_example, model) -> dataset` of batches with a `batch_size`
            attribute (see `DatasetBuilder`); a resumed run asks for the stream from its first
            unseen example (see `training_dataset(start_example=)`), and gets the loaded
            model (with its tokenizer).
        total_steps, steps_per_epoch: ints; an epoch is one checkpoint interval, and
            `total_steps` must be a multiple of it (fit runs whole epochs).
        output_dir: where `checkpoints/`, `history.csv`, `tensorboard/` and
            `run_config.json` go: a local folder or any `tf.io.gfile` path (`gs://...`).
        run_config: JSON-serialisable description of the run, recorded with
            `"steps": total_steps`; a resumed run must match it (a checkpoint of another
            preset or recipe is refused), except for the learning rate (a top-level
            "learning_rate" or `overrides.recipe.learning_rate`) and, when `total_steps`
            changes, the step count and the schedule's steps in `overrides.recipe`
            (`warmup_steps`, `cooldown_steps`, `total_steps`).
        callbacks: more Keras callbacks (evaluation, data statistics...).
        keep_checkpoints: how many of the newest checkpoints to keep.
        max_loss: the divergence guard's largest healthy loss (see `DivergenceGuard`).
        learning_rate: float or None. The peak learning rate for a resumed run: after a
            divergence, continue from the last good checkpoint with a lower rate. The
            schedule's shape (warm-up, decay, cool-down, its step count) and the optimizer's
            moments stay those of the checkpoint. None keeps the checkpoint's rate. A fresh
            run takes its rate from `build_model`.
        schedule: dict or None. For a resumed run, the schedule's step settings
            (`warmup_steps`, `cooldown_steps`, `total_steps`) that replace the checkpoint's:
            a run continued for more steps. A fresh run takes its schedule from
            `build_model`. None keeps the checkpoint's.
        log_every: int or None. TensorBoard scalars (`tensorboard/train`) every this many
            steps: the mean of each log over the steps since the previous point, and the
            learning rate (see `TensorBoardScalars`). None: once per epoch.

    Returns:
        (model, history dict of the epochs run in this call, resumed_from_epoch).
    """
    total_steps = positive_int(total_steps, "total_steps")
    steps_per_epoch = positive_int(steps_per_epoch, "steps_per_epoch")
    # Below 1 the pruning would delete the checkpoint just written: nothing to resume from.
    keep_checkpoints = positive_int(keep_checkpoints, "keep_checkpoints")
    if not callable(build_model) or isinstance(build_model, keras.Model):
        raise ValueError(
            "build_model must be a function () -> compiled SilcModel, called only for a fresh "
            f"run (a resumed run loads its checkpoint), got {type(build_model).__name__}. "
            "E.g. build_model=lambda: make_and_compile_my_model()."
        )
    if total_steps % steps_per_epoch:
        raise ValueError(
            f"total_steps ({total_steps}) must be a multiple of steps_per_epoch "
            f"({steps_per_epoch}): fit runs whole epochs, so the run would take "
            f"{math.ceil(total_steps / steps_per_epoch) * steps_per_epoch} steps."
        )
    if learning_rate is not None and not (
        isinstance(learning_rate, (int, float))
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}.")
    if log_every is not None and (not isinstance(log_every, int) or log_every < 1):
        raise ValueError(f"log_every must be a positive int or None, got {log_every!r}.")
    output_dir = os.fspath(output_dir)
    storage.makedirs(output_dir)
    if storage.is_local(output_dir) and not os.access(output_dir, os.W_OK):
        raise ValueError(f"The output folder {output_dir!r} is not writable; choose another.")
    run_config = {**(run_config or {}), "steps": total_steps}
    checkpoint_dir = storage.join(output_dir, "checkpoints")
    storage.makedirs(checkpoint_dir)
    storage.remove_partial_files(checkpoint_dir)
    found = _checkpoints(checkpoint_dir)
    if found:
        _check_same_run(output_dir, run_config, found[0][0] * steps_per_epoch)
    epochs = total_steps // steps_per_epoch

    model, initial_epoch = _load_newest_intact(checkpoint_dir)
    if model is None:
        model = build_model()
    else:
        print(f"Resuming from epoch {initial_epoch} (step {initial_epoch * steps_per_epoch}).")
        if learning_rate is not None:
            old = _set_learning_rate(model, learning_rate)
            if not math.isclose(old, learning_rate):
                print(f"Continuing with the peak learning rate {learning_rate:g} (was {old:g}).")
        if schedule:
            changed = _set_schedule_steps(model, schedule)
            if changed:
                described = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
                print(f"Continuing to step {total_steps} with the schedule's {described}.")
    if initial_epoch >= epochs:
        return model, {}, initial_epoch
    start_example = initial_epoch * steps_per_epoch * _batch_size_of(build_dataset)
    dataset = build_dataset(start_example, model)

    # Validated and built: from here on the folder belongs to this run.
    _write_json_atomically(storage.join(output_dir, RUN_CONFIG), run_config)
    history_path = storage.join(output_dir, "history.csv")
    _truncate_history(history_path, initial_epoch)
    # The guard raises at the end of a batch, so it stops the run before the epoch's
    # checkpoint is written, whatever its place in the list.
    all_callbacks = [
        *callbacks,
        DivergenceGuard(max_loss),
        _AtomicCheckpoint(storage.join(checkpoint_dir, CHECKPOINT_PATTERN)),
        _PruneCheckpoints(checkpoint_dir, keep_checkpoints),
        _HistoryCSV(history_path),
        TensorBoardScalars(
            storage.join(output_dir, "tensorboard", "train"), log_every or steps_per_epoch
        ),
    ]
    history = model.fit(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=all_callbacks,
        verbose=verbose,
        # The dataset shuffles itself; fit ignores the flag for it but warns when it is True.
        shuffle=False,
    )
    return model, history.history, initial_epoch


def _batch_size_of(build_dataset):
    size = getattr(build_dataset, "batch_size", None)
    if size is None:
        raise ValueError(
            "build_dataset needs a `batch_size` attribute (the examples per step), so that a "
            "resumed run can position its data stream; see keras_silc.training.DatasetBuilder."
        )
    return size


class DatasetBuilder:
    """`(start_example, model) -> dataset` with its batch size, for `fit_with_checkpoints`."""

    def __init__(self, fn, batch_size):
        self.fn = fn
        self.batch_size = batch_size

    def __call__(self, start_example, model):
        return self.fn(start_example, model)


class _AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model at each epoch's end with `save_model_atomically`."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomically(self.model, self.pattern.format(epoch=epoch + 1))


class _HistoryCSV(keras.callbacks.Callback):
    """Keras's `CSVLogger(append=True)` through `tf.io.gfile` (Keras's needs a local file):
    a row per epoch, the header from the file or the first epoch's logs, the whole file
    rewritten atomically after each epoch."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._rows = []

    def on_train_begin(self, logs=None):
        self._rows = []
        if storage.exists(self.path):
            self._rows = list(csv.reader(io.StringIO(storage.read_text(self.path), newline="")))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not self._rows:
            self._rows = [["epoch", *sorted(logs)]]
        values = [logs.get(key, "NA") for key in self._rows[0][1:]]
        self._rows.append([epoch, *(_csv_value(value) for value in values)])
        text = io.StringIO(newline="")
        csv.writer(text, lineterminator="\n").writerows(self._rows)
        storage.write_text_atomically(self.path, text.getvalue())


def _csv_value(value):
    try:
        return float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return value


class _PruneCheckpoints(keras.callbacks.Callback):
    def __init__(self, directory, keep):
        super().__init__()
        self.directory = directory
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        for _, path in _checkpoints(self.directory)[self.keep :]:
            storage.remove(path)
