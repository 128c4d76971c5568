"""One fixed training run, used to compare backends.

Run as `KERAS_BACKEND=<name> python parity_worker.py WORKDIR`: loads
WORKDIR/init.weights.h5 and WORKDIR/batch.npz, trains two SGD steps, writes
WORKDIR/result_<backend>.npz (losses and every weight by path) and
WORKDIR/model_<backend>.keras.
"""

import os
import sys

import keras
import numpy as np

from keras_silc import SilcModel


def weight_key(model, weight):
    """A weight's path without the model's auto-numbered name."""
    return weight.path.removeprefix(f"{model.name}/")


def training_run(workdir):
    keras.utils.set_random_seed(0)
    model = SilcModel.from_preset("silc_tiny")
    model.load_weights(os.path.join(workdir, "init.weights.h5"))
    batch = dict(np.load(os.path.join(workdir, "batch.npz")))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02, global_clipnorm=1.0))
    history = model.fit(batch, batch_size=len(batch["text"]), epochs=2, shuffle=False, verbose=0)
    result = {f"history/{k}": np.asarray(v, np.float64) for k, v in history.history.items()}
    for weight in model.weights:
        result[f"weight/{weight_key(model, weight)}"] = np.asarray(
            keras.ops.convert_to_numpy(weight)
        )
    model.save(os.path.join(workdir, f"model_{keras.backend.backend()}.keras"))
    return result


if __name__ == "__main__":
    workdir = sys.argv[1]
    np.savez(
        os.path.join(workdir, f"result_{keras.backend.backend()}.npz"), **training_run(workdir)
    )
