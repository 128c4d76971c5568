"""Long runs that lose nothing on a fault: checkpoints, resume, and a divergence guard.

`fit_with_checkpoints` wraps `model.fit` with Keras's own callbacks: `ModelCheckpoint`
writes the whole model (weights, EMA teacher, center, optimizer state, tokenizer) as a
`.keras` file every `steps_per_epoch` steps, `CSVLogger` appends the history and
`TensorBoard` logs the curves. Started again with the same arguments, it loads the newest
checkpoint and continues from its step with the data stream positioned where the
interrupted run left it, so it ends with the weights of an uninterrupted run.
"""

import glob
import json
import math
import os
import re

import keras
import numpy as np

CHECKPOINT_PATTERN = "epoch-{epoch:05d}.keras"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the last good checkpoint is intact."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with `TrainingDiverged` when the loss is not finite or explodes.

    It raises from `on_train_batch_end`, before the epoch's checkpoint is written, so the
    newest checkpoint on disk is the last good one. "Exploding" means the epoch's running
    mean loss exceeds `max_loss` (SILC's losses start near log(B) + log(K), so 1e4 is far
    beyond any healthy run).
    """

    def __init__(self, max_loss=1e4):
        super().__init__()
        self.max_loss = max_loss
        self.step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(keras.ops.convert_to_numpy(loss)))
        if not math.isfinite(loss) or loss > self.max_loss:
            what = "is not finite" if not math.isfinite(loss) else f"exploded to {loss:.4g}"
            raise TrainingDiverged(
                f"The training loss {what} at batch {batch} of epoch {self.epoch + 1}. The last "
                "good checkpoint is intact; lower the learning rate (--set "
                "recipe.learning_rate=...), lengthen the warm-up or check the data, then run "
                "the same command again to resume from it."
            )


def latest_checkpoint(directory):
    """(path, epoch) of the newest `epoch-NNNNN.keras` in `directory`, or (None, 0)."""
    found = []
    for path in glob.glob(os.path.join(directory, "epoch-*.keras")):
        match = re.search(r"epoch-(\d+)\.keras$", path)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        return None, 0
    epoch, path = max(found)
    return path, epoch


def _check_same_run(output_dir, run_config):
    path = os.path.join(output_dir, "run_config.json")
    if os.path.exists(path):
        with open(path) as handle:
            saved = json.load(handle)
        if saved != json.loads(json.dumps(run_config)):
            changed = sorted(
                k for k in set(saved) | set(run_config) if saved.get(k) != run_config.get(k)
            )
            raise ValueError(
                f"{output_dir!r} holds checkpoints of a different run (differs in {changed}). "
                "Resume with the same settings, or choose a new --output."
            )
    else:
        with open(path, "w") as handle:
            json.dump(run_config, handle, indent=2)


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
):
    """Trains to `total_steps`, checkpointing every `steps_per_epoch` steps; resumes.

    Args:
        build_model: `() -> compiled SilcModel`, called for a fresh run only.
        build_dataset: `(start_example, model) -> dataset` of batches with a `batch_size`
            attribute (see `DatasetBuilder`); a resumed run asks for the stream from its first
            unseen example (see `training_dataset(start_example=)`), and gets the loaded
            model (with its tokenizer).
        total_steps, steps_per_epoch: ints; an epoch is one checkpoint interval.
        output_dir: where `checkpoints/`, `history.csv`, `tensorboard/` and
            `run_config.json` go.
        run_config: JSON-serialisable description of the run; a resumed run must match it
            (a checkpoint of another preset or recipe is refused).
        callbacks: more Keras callbacks (evaluation, data statistics...).
        keep_checkpoints: how many of the newest checkpoints to keep.

    Returns:
        (model, history dict of the epochs run in this call, resumed_from_epoch).
    """
    if steps_per_epoch <= 0 or total_steps <= 0:
        raise ValueError("total_steps and steps_per_epoch must be positive.")
    os.makedirs(output_dir, exist_ok=True)
    if not os.access(output_dir, os.W_OK):
        raise ValueError(f"The output folder {output_dir!r} is not writable; choose another.")
    _check_same_run(output_dir, run_config or {})
    checkpoint_dir = os.path.join(output_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    epochs = math.ceil(total_steps / steps_per_epoch)

    path, initial_epoch = latest_checkpoint(checkpoint_dir)
    if path is None:
        model = build_model()
    else:
        import keras_silc  # noqa: F401  (registers the classes for loading)

        model = keras.models.load_model(path)
        print(f"Resuming from {path} (step {initial_epoch * steps_per_epoch}).")
    if initial_epoch >= epochs:
        return model, {}, initial_epoch
    start_example = initial_epoch * steps_per_epoch * _batch_size_of(build_dataset)
    dataset = build_dataset(start_example, model)

    # The guard raises at the end of a batch, so it stops the run before the epoch's
    # checkpoint is written, whatever its place in the list.
    all_callbacks = [
        *callbacks,
        DivergenceGuard(max_loss),
        keras.callbacks.ModelCheckpoint(os.path.join(checkpoint_dir, CHECKPOINT_PATTERN)),
        _PruneCheckpoints(checkpoint_dir, keep_checkpoints),
        keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"), append=True),
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


class _PruneCheckpoints(keras.callbacks.Callback):
    def __init__(self, directory, keep):
        super().__init__()
        self.directory = directory
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        paths = sorted(glob.glob(os.path.join(self.directory, "epoch-*.keras")))
        for path in paths[: -self.keep]:
            os.remove(path)
