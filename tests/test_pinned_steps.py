"""The library's numbers, pinned: the training batches (a hash of every array) and the losses
and updated weights of three SILC steps for a fixed seed, on each backend, as recorded by
commit dc78b3b before the library was restructured; the "host" entries re-recorded when the
host's colour jitter became the accelerator's affine colour map (`color_jitter="exact"`
removed: one photometric implementation). A change that moves any of them changes what
users train; if it is meant to, rerun this file as a script for the entries it moves,
`KERAS_BACKEND=... python tests/test_pinned_steps.py host` (see `record`), on each backend,
and say so in the commit."""

import hashlib
import json
import os
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND

from keras_silc import SilcModel
from keras_silc import data

RECORD = os.path.join(os.path.dirname(__file__), "data", "pinned_steps.json")
WORDS = "a red blue small large shirt shoe bag coat dress left right of the on".split()
PHOTOMETRIC = ("host", "accelerator")
NUM_BATCHES = 3


def fingerprint(array):
    """The mean and four fixed random projections of a weight, scaled so that a change of
    d in every element moves each number by about d."""
    flat = np.asarray(array, np.float64).ravel()
    signs = np.random.default_rng(flat.size).standard_normal((4, flat.size))
    return [float(flat.mean())] + [float(v) for v in signs @ flat / np.sqrt(flat.size)]


def digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def example_pairs():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 40, 40, 3), dtype=np.uint8)
    captions = [" ".join(rng.choice(WORDS, size=rng.integers(2, 7))) for _ in range(24)]
    return images, captions


def pinned_run(photometric):
    """Batches, per-step losses and final weights of three steps of a tiny SILC model with a
    WordPiece tokenizer, the multi-crop pipeline and the paper's optimizer."""
    images, captions = example_pairs()
    tokenizer = data.SilcTokenizer.from_captions(captions, 64, 16, "wordpiece")
    keras.utils.set_random_seed(0)
    model, dataset = build(images, captions, tokenizer, photometric)
    batches = list(dataset.take(NUM_BATCHES).as_numpy_iterator())
    model.compile(warmup_steps=2)
    losses = []
    record_loss = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda _, logs: losses.append(float(logs["loss"]))
    )
    stacked = {key: np.stack([batch[key] for batch in batches]) for key in batches[0]}
    model.fit(
        tf.data.Dataset.from_tensor_slices(stacked),
        epochs=1,
        verbose=0,
        callbacks=[record_loss],
        shuffle=False,
    )
    return {
        "batches": [{key: digest(value) for key, value in sorted(b.items())} for b in batches],
        "losses": losses,
        # The model's own weights under one name (Keras numbers the models built before).
        "weights": {
            re.sub(r"^silc_model(_\d+)?/", "silc_model/", w.path): fingerprint(
                keras.ops.convert_to_numpy(w)
            )
            for w in model.weights
        },
    }


def build(images, captions, tokenizer, photometric):
    model = SilcModel.from_preset("silc_tiny", tokenizer=tokenizer, text={"vocabulary_size": 64})
    dataset = data.training_dataset(
        data.from_arrays(images, captions),
        model.preprocessor,
        4,
        seed=3,
        deterministic=True,
        shuffle_buffer=16,
        augmentation={"photometric": photometric},
    )
    return model, dataset


def record(photometric=PHOTOMETRIC):
    """Writes this backend's entries of the record for the `photometric` settings given
    (run once per backend: `python tests/test_pinned_steps.py [host] [accelerator]`)."""
    records = {}
    if os.path.exists(RECORD):
        with open(RECORD) as handle:
            records = json.load(handle)
    records.setdefault(BACKEND, {}).update({name: pinned_run(name) for name in photometric})
    with open(RECORD, "w") as handle:
        json.dump(records, handle, indent=0, sort_keys=True)


@pytest.mark.parametrize("photometric", PHOTOMETRIC)
def test_batches_losses_and_weights_match_the_record(photometric):
    with open(RECORD) as handle:
        expected = json.load(handle)[BACKEND][photometric]
    actual = pinned_run(photometric)
    assert actual["batches"] == expected["batches"]
    np.testing.assert_allclose(actual["losses"], expected["losses"], rtol=1e-6)
    assert sorted(actual["weights"]) == sorted(expected["weights"])
    for path, values in expected["weights"].items():
        np.testing.assert_allclose(actual["weights"][path], values, atol=1e-6, err_msg=path)


if __name__ == "__main__":
    record(sys.argv[1:] or PHOTOMETRIC)
