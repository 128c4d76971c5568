"""Same numbers on jax, tensorflow and torch; files that load anywhere."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import tiny_model
from conftest import to_numpy
from conftest import weights_numpy
from parity_worker import training_run
from parity_worker import weight_key

BACKENDS = ("jax", "tensorflow", "torch")
WORKER = os.path.join(os.path.dirname(__file__), "parity_worker.py")


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """This backend's run in-process, the two others in subprocesses, same inputs."""
    workdir = str(tmp_path_factory.mktemp("parity"))
    model = tiny_model()
    model.save_weights(os.path.join(workdir, "init.weights.h5"))
    np.savez(os.path.join(workdir, "batch.npz"), **model.preprocessor.example_batch(4, seed=0))
    results = {BACKEND: training_run(workdir)}
    for other in BACKENDS:
        if other == BACKEND:
            continue
        env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, WORKER, workdir], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[other] = dict(np.load(os.path.join(workdir, f"result_{other}.npz")))
    return workdir, results


def test_same_losses_and_updated_weights_on_every_backend(parity_runs):
    _, results = parity_runs
    reference = results[BACKEND]
    assert reference["history/loss"][1] != reference["history/loss"][0]
    for other, result in results.items():
        assert sorted(result) == sorted(reference), other
        for key, value in reference.items():
            np.testing.assert_allclose(
                result[key], value, rtol=1e-5, atol=1e-5, err_msg=f"{key}: {BACKEND} vs {other}"
            )


def test_files_saved_on_any_backend_load_here(parity_runs):
    workdir, results = parity_runs
    for other in BACKENDS:
        model = keras.models.load_model(os.path.join(workdir, f"model_{other}.keras"))
        for weight in model.weights:
            np.testing.assert_array_equal(
                to_numpy(weight),
                results[other][f"weight/{weight_key(model, weight)}"],
                err_msg=weight.path,
            )
        assert int(to_numpy(model.optimizer.iterations)) == 2
        history = model.fit(
            model.preprocessor.example_batch(4), batch_size=4, epochs=1, verbose=0
        ).history  # training continues from the restored optimizer
        assert np.isfinite(history["loss"][0])


def test_save_and_load_round_trip_everything(tmp_path):
    model = tiny_model(contrastive_loss="siglip", teacher_momentum=0.9)
    batch = model.preprocessor.example_batch(4)
    model.compile(warmup_steps=1)
    model.fit(batch, batch_size=4, epochs=2, verbose=0)
    path = str(tmp_path / "silc.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for a, b in zip(weights_numpy(loaded.weights), weights_numpy(model.weights), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(to_numpy(loaded.center)).max() > 0  # the center travelled
    np.testing.assert_allclose(
        to_numpy(loaded.encode_image(batch["image"])),
        to_numpy(model.encode_image(batch["image"])),
        atol=1e-6,
    )
    # Both continue identically: optimizer state and schedule were restored.
    after_original = model.fit(batch, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    after_loaded = loaded.fit(batch, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(after_loaded["loss"], after_original["loss"], rtol=1e-5)
    for a, b in zip(weights_numpy(loaded.weights), weights_numpy(model.weights), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
