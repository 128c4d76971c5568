"""Multi-device training: keras.distribution on JAX equals one device; other engines refuse."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import BACKEND

HERE = os.path.dirname(__file__)

# Appended to a script that built and compiled `model` under a distributed engine.
_FIT_OR_REPORT_REFUSAL = textwrap.dedent(
    """
    batch = model.preprocessor.example_batch(batch_size=4, seed=0)
    try:
        model.fit(batch, batch_size=4, epochs=1, verbose=0)
    except NotImplementedError as error:
        print("REFUSED", error)
    """
)


def _run(script, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX's engine")
def test_data_and_model_parallel_match_one_device(tmp_path):
    out = tmp_path / "runs.npz"
    subprocess.run(
        [sys.executable, os.path.join(HERE, "distribution_worker.py"), str(out)],
        check=True,
        timeout=600,
    )
    runs = dict(np.load(out))
    keys = [k.removeprefix("single/") for k in runs if k.startswith("single/")]
    values = [k for k in keys if not k.startswith(("devices/", "shard/"))]
    assert any(k.startswith("weight/teacher/") for k in values)
    assert any(k.endswith("center") for k in values)
    for name in ("data_parallel", "data_parallel_accumulated", "model_parallel"):
        for key in values:
            np.testing.assert_allclose(
                runs[f"{name}/{key}"], runs[f"single/{key}"], rtol=1e-5, atol=1e-5, err_msg=key
            )
    bn_keys = [
        k.removeprefix("single_batch_norm/") for k in runs if k.startswith("single_batch_norm/")
    ]
    bn_values = [k for k in bn_keys if not k.startswith(("devices/", "shard/"))]
    assert any("mlp_0_norm/moving_mean" in k for k in bn_values)
    for key in bn_values:
        np.testing.assert_allclose(
            runs[f"data_parallel_batch_norm/{key}"],
            runs[f"single_batch_norm/{key}"],
            rtol=1e-5,
            atol=1e-5,
            err_msg=key,
        )
    query = "student/encoder/block_0/attention/query/kernel"
    teacher_query = query.replace("student", "teacher")
    # One device holds everything; data parallel replicates weights on all 8 devices.
    assert runs[f"single/devices/{query}"] == 1
    assert runs[f"data_parallel/devices/{query}"] == 8
    np.testing.assert_array_equal(runs[f"data_parallel/shard/{query}"], [32, 32])
    # Model parallel splits the query kernel's columns in two, the teacher's alike.
    np.testing.assert_array_equal(runs[f"model_parallel/shard/{query}"], [32, 16])
    np.testing.assert_array_equal(runs[f"model_parallel/shard/{teacher_query}"], [32, 16])


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX's engine")
def test_layout_map_needs_a_model_axis():
    import keras

    from keras_silc.distribution import silc_layout_map

    mesh = keras.distribution.DeviceMesh((1,), ("batch",), keras.distribution.list_devices()[:1])
    with pytest.raises(ValueError, match="model_axis"):
        silc_layout_map(mesh)
    with pytest.raises(ValueError, match="takes a keras.distribution.DeviceMesh.*got NoneType"):
        silc_layout_map(None)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")
def test_mirrored_strategy_is_refused_with_a_clear_error():
    script = textwrap.dedent(
        """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        import keras
        from keras_silc import SilcModel
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = SilcModel.from_preset("silc_tiny")
            model.compile()
        """
    )
    result = _run(script + _FIT_OR_REPORT_REFUSAL)
    assert "REFUSED" in result.stdout, result.stderr[-3000:]
    assert "MirroredStrategy with 2 replicas" in result.stdout
    assert "keras.distribution.DataParallel" in result.stdout


@pytest.mark.skipif(BACKEND != "torch", reason="torch.distributed")
def test_torch_ddp_is_refused_with_a_clear_error(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import torch.distributed as dist
        rank = int(sys.argv[1])
        dist.init_process_group(
            "gloo", init_method="file://{tmp_path}/rendezvous", rank=rank, world_size=2
        )
        from keras_silc import SilcModel
        model = SilcModel.from_preset("silc_tiny")
        model.compile()
        """
    )
    script += _FIT_OR_REPORT_REFUSAL + "dist.destroy_process_group()\n"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for stdout, stderr in outputs:
        assert "REFUSED" in stdout, stderr[-3000:]
        assert "torch.distributed with 2 processes" in stdout


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_is_finite_and_close_to_float32(policy):
    import keras

    if policy == "mixed_float16" and BACKEND == "jax":
        pytest.skip("XLA:CPU has no float16 x float16 -> float32 dot (it runs on GPU)")

    from keras_silc import SilcModel

    def one_step(dtype_policy, **overrides):
        keras.config.set_dtype_policy(dtype_policy)
        try:
            keras.utils.set_random_seed(0)
            model = SilcModel.from_preset("silc_tiny", **overrides)
            batch = model.preprocessor.example_batch(batch_size=8, seed=1)
            # The forward pass at the initial weights, then one training step.
            embedding = model.encode_image(batch["image"])
            embedding = np.asarray(keras.ops.convert_to_numpy(embedding), np.float32)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05))
            if dtype_policy == "mixed_float16":
                assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            logs = model.train_on_batch(batch, return_dict=True)
            return model, logs, embedding
        finally:
            keras.config.set_dtype_policy("float32")

    reference, reference_logs, reference_embedding = one_step("float32")
    model, logs, embedding = one_step(policy)
    # Weights stay float32; the losses and softmaxes are computed in float32.
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    for key in ("loss", "contrastive_loss", "distillation_loss"):
        assert np.isfinite(logs[key])
        np.testing.assert_allclose(logs[key], reference_logs[key], rtol=0.05, err_msg=key)
    assert np.all(np.isfinite(embedding))
    cosine = np.sum(embedding * reference_embedding, axis=-1)
    assert cosine.min() > 0.98, cosine
    # In micro-batches (float32 embedding gradients, loss scaling) the step is the same.
    accumulated, accumulated_logs, _ = one_step(policy, gradient_accumulation_steps=2)
    for key in ("loss", "contrastive_loss", "distillation_loss"):
        np.testing.assert_allclose(accumulated_logs[key], logs[key], rtol=1e-2, err_msg=key)
    keras.utils.set_random_seed(0)
    start = SilcModel.from_preset("silc_tiny").trainable_weights

    def update(weights):
        flat = [np.ravel(keras.ops.convert_to_numpy(w)) for w in weights]
        return np.concatenate(flat) - np.concatenate(
            [np.ravel(keras.ops.convert_to_numpy(w)) for w in start]
        )

    full, micro = update(model.trainable_weights), update(accumulated.trainable_weights)
    assert np.all(np.isfinite(micro))
    # The whole update agrees to low-precision round-off (per-weight equality: test_model).
    assert np.linalg.norm(micro - full) <= 0.05 * np.linalg.norm(full)
