"""A SILC training run under keras.distribution on 8 virtual CPU devices, against one device.

Run as `python distribution_worker.py OUT.npz` with KERAS_BACKEND=jax; it sets
`--xla_force_host_platform_device_count=8` itself (before JAX starts). The same initial weights
train two steps on the same global batch three ways: on one device, with `DataParallel` over 8
devices (also in two micro-batches with `gradient_accumulation_steps=2`), and with
`ModelParallel` (a 4-way data x 2-way model mesh, towers' weight matrices
split on the model axis by `silc_layout_map`); and, with a batch-normalised head, on one device
and with `DataParallel`. Losses and every weight (student, teacher,
center, logit scale) are written for the test to compare.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_silc import SilcModel  # noqa: E402
from keras_silc.distribution import silc_layout_map  # noqa: E402

GLOBAL_BATCH = 16
# One block per tower: the layouts and the updates are those of any depth; XLA compiles six
# training steps here, each in about half the time of silc_tiny's two blocks.
ONE_BLOCK = {"vision": {"depth": 1}, "text": {"depth": 1}}


def run(distribution, init_weights, batch, **overrides):
    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(0)
        model = SilcModel.from_preset("silc_tiny", **ONE_BLOCK, **overrides)
        model.set_weights(init_weights)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, global_clipnorm=1.0))
        history = model.fit(batch, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0)
        result = {f"history/{k}": np.asarray(v, np.float64) for k, v in history.history.items()}
        for weight in model.weights:
            key = weight.path.removeprefix(f"{model.name}/")
            result[f"weight/{key}"] = np.asarray(keras.ops.convert_to_numpy(weight))
            # How the weight is laid out: devices holding it, and the split of its first shard.
            sharding = weight.value.sharding
            result[f"devices/{key}"] = np.asarray(len(sharding.device_set))
            shard = sharding.shard_shape(weight.value.shape)
            result[f"shard/{key}"] = np.asarray(shard if shard else (), np.int64)
        return result
    finally:
        keras.distribution.set_distribution(None)


def main(path):
    import jax

    devices = jax.devices()
    assert len(devices) == 8, devices
    keras.utils.set_random_seed(0)
    model = SilcModel.from_preset("silc_tiny", **ONE_BLOCK)
    init_weights = model.get_weights()
    batch = model.preprocessor.example_batch(batch_size=GLOBAL_BATCH, seed=1)
    results = {"single": run(None, init_weights, batch)}
    results["data_parallel"] = run(
        keras.distribution.DataParallel(devices=devices), init_weights, batch
    )
    # Data parallel in two micro-batches of 8 (one example per device each).
    results["data_parallel_accumulated"] = run(
        keras.distribution.DataParallel(devices=devices),
        init_weights,
        batch,
        gradient_accumulation_steps=2,
    )
    mesh = keras.distribution.DeviceMesh((4, 2), ("batch", "model"), devices)
    results["model_parallel"] = run(
        keras.distribution.ModelParallel(layout_map=silc_layout_map(mesh), batch_dim_name="batch"),
        init_weights,
        batch,
    )
    # A batch-normalised head: under DataParallel its statistics are the global batch's.
    keras.utils.set_random_seed(0)
    bn_model = SilcModel.from_preset("silc_tiny", **ONE_BLOCK, head={"batch_norm": True})
    bn_weights = bn_model.get_weights()
    results["single_batch_norm"] = run(None, bn_weights, batch, head={"batch_norm": True})
    results["data_parallel_batch_norm"] = run(
        keras.distribution.DataParallel(devices=devices),
        bn_weights,
        batch,
        head={"batch_norm": True},
    )
    np.savez(
        path, **{f"{run}/{k}": v for run, values in results.items() for k, v in values.items()}
    )


if __name__ == "__main__":
    main(sys.argv[1])
