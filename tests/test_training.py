"""Checkpoints, exact resume after a fault, and the divergence guard, on every backend."""

import json

import keras
import pytest
from conftest import tiny_model
from test_data import CAPTIONS
from test_data import _images
from test_data import hash_tokenizer

from keras_silc import data
from keras_silc import training


class Crash(Exception):
    pass


class CrashAfter(keras.callbacks.Callback):
    """Simulates a killed job: dies after `epochs` epochs (checkpoints written)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epochs:
            raise Crash()


def _run(output, callbacks=(), total_steps=8, max_loss=1e4, learning_rate=None):
    geometry = tiny_model()
    pairs = data.from_arrays(_images(12), (CAPTIONS * 3)[:12])

    def build_model():
        model = tiny_model()
        model.compile(warmup_steps=2)
        return model

    def build_dataset(start_example, model):
        return data.training_dataset(
            pairs,
            geometry,
            4,
            tokenizer=hash_tokenizer(),
            seed=5,
            deterministic=True,
            start_example=start_example,
        )

    return training.fit_with_checkpoints(
        build_model,
        training.DatasetBuilder(build_dataset, batch_size=4),
        total_steps=total_steps,
        steps_per_epoch=2,
        output_dir=str(output),
        run_config={"preset": "silc_tiny", "seed": 5, "learning_rate": learning_rate},
        callbacks=list(callbacks),
        verbose=0,
        max_loss=max_loss,
        learning_rate=learning_rate,
    )


class PoisonLoss(keras.callbacks.Callback):
    """Reports a NaN loss in the second epoch, as a diverging run would."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1:
            logs["loss"] = float("nan")


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(training.TrainingDiverged, match="last good checkpoint is intact"):
        _run(tmp_path, callbacks=[PoisonLoss()])
    _, epoch = training.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert epoch == 1
    with pytest.raises(training.TrainingDiverged, match="exploded"):
        _run(tmp_path, max_loss=1e-3)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    _run(tmp_path, total_steps=2)
    config = tmp_path / "run_config.json"
    saved = config.read_text()
    config.write_text(json.dumps({"preset": "silc_b16", "seed": 5}))
    with pytest.raises(ValueError, match=r"different run.*\['preset'\]"):
        _run(tmp_path)
    # Without its settings, a folder's checkpoints cannot be told apart from another run's.
    config.write_text('{"preset": "silc_')
    with pytest.raises(ValueError, match="run_config.json is unreadable"):
        _run(tmp_path)
    config.unlink()
    with pytest.raises(ValueError, match="run_config.json is missing"):
        _run(tmp_path)
    config.write_text(saved)
    _run(tmp_path, total_steps=4)


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    from keras_silc.callbacks import DivergenceGuard
    from keras_silc.callbacks import TensorBoardScalars

    def fit(**overrides):
        arguments = dict(
            build_model=tiny_model,
            build_dataset=training.DatasetBuilder(lambda start, model: None, batch_size=4),
            total_steps=4,
            steps_per_epoch=2,
            output_dir=str(tmp_path / "run"),
        )
        return training.fit_with_checkpoints(**{**arguments, **overrides})

    # keep_checkpoints=0 deleted every checkpoint, the newest too: nothing left to resume.
    for keep in (0, -1, "2"):
        with pytest.raises(ValueError, match="keep_checkpoints must be a positive integer"):
            fit(keep_checkpoints=keep)
    with pytest.raises(ValueError, match=r"build_model must be a function \(\) -> compiled"):
        fit(build_model=tiny_model())
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer, got 0"):
        fit(steps_per_epoch=0)
    assert not (tmp_path / "run").exists()
    # A NaN max_loss switched the explosion check off (every comparison with NaN is False).
    for max_loss in (float("nan"), 0, "1e4", None):
        with pytest.raises(ValueError, match="max_loss must be a positive number"):
            DivergenceGuard(max_loss)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        TensorBoardScalars(str(tmp_path / "file"))
    with pytest.raises(ValueError, match="log_dir must be a folder path, got None"):
        TensorBoardScalars(None)
