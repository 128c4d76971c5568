"""Shared test harness: tiny models, backend helpers, quiet logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_silc import SilcModel  # noqa: E402

BACKEND = keras.backend.backend()

if BACKEND == "jax":
    # Tiny models compile to the same programs test after test: reuse them.
    import tempfile

    import jax

    jax.config.update(
        "jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "keras_silc_jax_cache")
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Keras, numpy and Python draws start from one seed in every test, whatever ran before
    it on its pytest-xdist worker: a failure reproduces on a rerun."""
    keras.utils.set_random_seed(0)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def weights_numpy(weights):
    return [to_numpy(w) for w in weights]


def gradient(fn, x):
    """d sum(fn(x)) / dx on the current backend, as numpy."""
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: keras.ops.sum(fn(t)))(x))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.ops.sum(fn(x))
        grad = tape.gradient(y, x)
        return np.zeros(x.shape, np.float32) if grad is None else grad.numpy()
    import torch

    x = torch.tensor(x, requires_grad=True)
    y = keras.ops.sum(fn(x))
    if not y.requires_grad:  # stop_gradient cut every path from x
        return np.zeros(tuple(x.shape), np.float32)
    y.backward()
    return x.grad.numpy()


def hash_tokenizer(length=16, vocabulary=256):
    """A stand-in tokenizer: words hashed to ids 1..vocabulary-1, padded with 0."""
    import tensorflow as tf

    def tokenize(captions):
        words = tf.strings.split(captions).to_tensor("", shape=[None, length])
        ids = tf.strings.to_hash_bucket_fast(words, vocabulary - 1) + 1
        return tf.where(words == "", tf.zeros_like(ids), ids)

    return tokenize


def tiny_model(**overrides):
    keras.utils.set_random_seed(0)
    return SilcModel.from_preset("silc_tiny", **overrides)


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def batch(model):
    return model.preprocessor.example_batch(4, seed=0)
