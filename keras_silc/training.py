"""Long runs that lose nothing on a fault: checkpoints, resume, and a divergence guard.

`fit_with_checkpoints` wraps `model.fit` with callbacks: every `steps_per_epoch` steps
the whole model (weights, EMA teacher, center, optimizer state, tokenizer) is saved as a
`.keras` file, written under a temporary name and renamed into place so that a kill never
leaves a truncated checkpoint; `CSVLogger` appends the history and `TensorBoard` logs the
curves. Started again with the same arguments, it loads the newest intact checkpoint and
continues from its step with the data stream positioned where the interrupted run left
it, so it ends with the weights of an uninterrupted run.
"""

import csv
import glob
import json
import math
import os
import re
import warnings
import zipfile

import keras

from keras_silc.callbacks import DivergenceGuard
from keras_silc.callbacks import TrainingDiverged

__all__ = [
    "CHECKPOINT_PATTERN",
    "DatasetBuilder",
    "DivergenceGuard",
    "TrainingDiverged",
    "check_model_file",
    "fit_with_checkpoints",
    "latest_checkpoint",
    "load_model_checked",
    "save_model_atomically",
]

CHECKPOINT_PATTERN = "epoch-{epoch:05d}.keras"
RUN_CONFIG = "run_config.json"
# A save in progress: hidden from `latest_checkpoint`, renamed into place when complete.
_PARTIAL = ".partial-"


# ------------------------------------------------------------------ model files
def save_model_atomically(model, path):
    """`model.save(path)` that never leaves a truncated file at `path`.

    Keras writes a `.keras` zip in place, so a kill during the save leaves a damaged file
    under the final name. This writes a hidden temporary file in the same folder and
    renames it over `path` (`os.replace`, atomic on one file system) once it is complete.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}{_PARTIAL}{os.getpid()}.keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _remove_partial_saves(folder):
    for path in glob.glob(os.path.join(folder, f".*{_PARTIAL}*.keras")):
        try:
            os.remove(path)
        except OSError:
            pass


def check_model_file(path, expected_class="SilcModel"):
    """Raises ValueError saying what is wrong with `path` as a saved `expected_class`.

    Checks, without building the model: the file exists and is not empty, is a complete
    zip archive (a save cut short by a kill leaves a truncated one), holds a Keras model
    (`config.json` and the weights), of class `expected_class` (None: any class).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No saved model at {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not a .keras file.")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path!r} is empty (0 bytes): its save was cut short.")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise ValueError(
                f"{path!r} is a truncated zip archive ({size} bytes): its save was cut short "
                "(the process was killed or the disk filled up)."
            )
        what = "an HDF5 file (a legacy .h5 model?)" if head == b"\x89HDF" else "not a zip archive"
        raise ValueError(f"{path!r} is not a .keras model file: it is {what}.")
    try:
        with zipfile.ZipFile(path) as archive:
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
    ValueError that names the file and what is wrong with it."""
    import keras_silc  # noqa: F401  (registers the classes for loading)
    import keras_silc.data.tokenizer  # noqa: F401

    check_model_file(path, expected_class)
    try:
        model = keras.models.load_model(path)
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
    for path in glob.glob(os.path.join(directory, "epoch-*.keras")):
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
            os.replace(path, path + ".damaged")
    return None, 0


# Settings a resumed run may change (see `fit_with_checkpoints(learning_rate=)`).
def _comparable(run_config):
    config = json.loads(json.dumps(run_config))
    config.pop("learning_rate", None)
    recipe = config.get("overrides", {}).get("recipe") if isinstance(config, dict) else None
    if isinstance(recipe, dict):
        recipe.pop("learning_rate", None)
    return config


def _check_same_run(output_dir, run_config):
    """Refuses checkpoints in `output_dir` made with other settings (learning rate aside)."""
    path = os.path.join(output_dir, RUN_CONFIG)
    if not os.path.exists(path):
        return
    with open(path) as handle:
        try:
            saved = json.load(handle)
        except json.JSONDecodeError:
            return  # cut short while written: it is rewritten when training starts
    saved, current = _comparable(saved), _comparable(run_config)
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise ValueError(
            f"{output_dir!r} holds checkpoints of a different run (differs in {changed}). "
            "Resume with the same settings (only the learning rate may change), or choose a "
            "new --output."
        )


def _write_json_atomically(path, value):
    temporary = f"{path}{_PARTIAL}{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(value, handle, indent=2)
    os.replace(temporary, path)


def _set_learning_rate(model, learning_rate):
    """Sets the peak learning rate of a loaded model's optimizer; returns the old one."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    schedule = getattr(optimizer, "_learning_rate", None)
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


def _truncate_history(path, epochs):
    """Keeps the first `epochs` rows of history.csv (rows after the resumed checkpoint
    belong to epochs that are run again)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) <= epochs + 1:
        return
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows[: epochs + 1] if epochs else [])


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
):
    """Trains to `total_steps`, checkpointing every `steps_per_epoch` steps; resumes.

    What survives a kill at any moment: each checkpoint is written under a temporary name
    and renamed into place, so the newest `epoch-NNNNN.keras` is complete; a checkpoint
    damaged otherwise is skipped (renamed `*.damaged`) with a warning, and the run resumes
    from the newest intact one. `run_config.json` is written when training starts, after
    the model and data are built, and only binds a folder that holds checkpoints: a run
    that failed before its first checkpoint can be started again with other settings.

    Args:
        build_model: `() -> compiled SilcModel`, called for a fresh run only.
        build_dataset: `(start_example, model) -> dataset` of batches with a `batch_size`
            attribute (see `DatasetBuilder`); a resumed run asks for the stream from its first
            unseen example (see `training_dataset(start_example=)`), and gets the loaded
            model (with its tokenizer).
        total_steps, steps_per_epoch: ints; an epoch is one checkpoint interval, and
            `total_steps` must be a multiple of it (fit runs whole epochs).
        output_dir: where `checkpoints/`, `history.csv`, `tensorboard/` and
            `run_config.json` go.
        run_config: JSON-serialisable description of the run; a resumed run must match it
            (a checkpoint of another preset or recipe is refused), except for the
            learning rate (a top-level "learning_rate" or `overrides.recipe.learning_rate`).
        callbacks: more Keras callbacks (evaluation, data statistics...).
        keep_checkpoints: how many of the newest checkpoints to keep.
        max_loss: the divergence guard's largest healthy loss (see `DivergenceGuard`).
        learning_rate: float or None. The peak learning rate for a resumed run: after a
            divergence, continue from the last good checkpoint with a lower rate. The
            schedule's shape (warm-up, decay, cool-down, its step count) and the optimizer's
            moments stay those of the checkpoint. None keeps the checkpoint's rate. A fresh
            run takes its rate from `build_model`.

    Returns:
        (model, history dict of the epochs run in this call, resumed_from_epoch).
    """
    if steps_per_epoch <= 0 or total_steps <= 0:
        raise ValueError("total_steps and steps_per_epoch must be positive.")
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
    os.makedirs(output_dir, exist_ok=True)
    if not os.access(output_dir, os.W_OK):
        raise ValueError(f"The output folder {output_dir!r} is not writable; choose another.")
    run_config = run_config or {}
    checkpoint_dir = os.path.join(output_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    _remove_partial_saves(checkpoint_dir)
    if _checkpoints(checkpoint_dir):
        _check_same_run(output_dir, run_config)
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
    if initial_epoch >= epochs:
        return model, {}, initial_epoch
    start_example = initial_epoch * steps_per_epoch * _batch_size_of(build_dataset)
    dataset = build_dataset(start_example, model)

    # Validated and built: from here on the folder belongs to this run.
    _write_json_atomically(os.path.join(output_dir, RUN_CONFIG), run_config)
    history_path = os.path.join(output_dir, "history.csv")
    _truncate_history(history_path, initial_epoch)
    # The guard raises at the end of a batch, so it stops the run before the epoch's
    # checkpoint is written, whatever its place in the list.
    all_callbacks = [
        *callbacks,
        DivergenceGuard(max_loss),
        _AtomicCheckpoint(os.path.join(checkpoint_dir, CHECKPOINT_PATTERN)),
        _PruneCheckpoints(checkpoint_dir, keep_checkpoints),
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), write_graph=False),
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


class _PruneCheckpoints(keras.callbacks.Callback):
    def __init__(self, directory, keep):
        super().__init__()
        self.directory = directory
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        for _, path in _checkpoints(self.directory)[self.keep :]:
            os.remove(path)
