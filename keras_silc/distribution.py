"""Scaling out with the backends' own engines: `keras.distribution` on JAX.

Data parallel training needs nothing from keras_silc: set `keras.distribution.DataParallel`
and `fit` as usual. The step is one jit-compiled SPMD program over the global batch, so the
contrastive loss sees every example of the global batch as a negative and the center moves
with the global batch mean, exactly as on one device (tested on 8 virtual CPU devices).

Model parallel training splits the towers' weight matrices over a "model" mesh axis with
`silc_layout_map` (Megatron-style: attention and MLP input projections split by output
column, their output projections by input row), the same layout for the student, the EMA
teacher and the distillation head, so the EMA update never moves data between devices.

TensorFlow's `tf.distribute` strategies and PyTorch DDP run a replica's step on its local
batch: the contrastive loss would see local negatives only and each replica would keep its own
center. keras_silc refuses those set-ups with an error instead of training a different model
(see `check_distribution_support`).
"""

import keras

# Weight path patterns (Keras matches them with re.fullmatch) -> layout over (data, model) axes; `None` = replicated.
_MODEL_PARALLEL_RULES = (
    (r".*attention/(query|key|value)/kernel", (None, "model")),
    (r".*attention/(query|key|value)/bias", ("model",)),
    (r".*attention/output/kernel", ("model", None)),
    (r".*mlp/fc1/kernel", (None, "model")),
    (r".*mlp/fc1/bias", ("model",)),
    (r".*mlp/fc2/kernel", ("model", None)),
    (r".*patch_embedding/kernel", (None, "model")),
    (r".*token_embedding/embeddings", (None, "model")),
    (r".*head/prototypes/kernel", (None, "model")),
)


def silc_layout_map(device_mesh, model_axis="model"):
    """A `keras.distribution.LayoutMap` that splits SILC's weight matrices over `model_axis`.

    Use with `keras.distribution.ModelParallel(layout_map=..., batch_dim_name=...)`. Weights
    not named here (norms, biases of output projections, position embeddings, the center, the
    logit scale) are replicated. Dimensions must divide by the mesh's model-axis size.
    """
    if not hasattr(device_mesh, "axis_names"):
        raise ValueError(
            "silc_layout_map takes a keras.distribution.DeviceMesh, e.g. "
            "DeviceMesh((1, 8), ['batch', 'model'], keras.distribution.list_devices()); "
            f"got {type(device_mesh).__name__}."
        )
    if model_axis not in device_mesh.axis_names:
        raise ValueError(
            f"The device mesh has axes {device_mesh.axis_names}; silc_layout_map splits weights "
            f"over {model_axis!r}. Name one of the mesh axes so, or pass model_axis=."
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in _MODEL_PARALLEL_RULES:
        layout_map[pattern] = tuple(model_axis if a == "model" else a for a in axes)
    return layout_map


def check_distribution_support():
    """Raises if a backend's distributed engine would train SILC with local negatives.

    Called when a SilcModel trains. TensorFlow: a `tf.distribute` strategy with more than one
    replica in scope. PyTorch: `torch.distributed` initialised with more than one process.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
            if strategy.num_replicas_in_sync > 1:
                raise NotImplementedError(
                    f"SilcModel cannot train under {type(strategy).__name__} with "
                    f"{strategy.num_replicas_in_sync} replicas: each replica would compute the "
                    "contrastive loss with its local batch as negatives and keep its own "
                    "center, which is not SILC. Train multi-device on the JAX backend with "
                    "keras.distribution.DataParallel (see keras_silc.distribution)."
                )
    elif backend == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise NotImplementedError(
                f"SilcModel cannot train under torch.distributed with {dist.get_world_size()} "
                "processes: Keras's torch trainer would compute the contrastive loss with each "
                "process's local batch as negatives and keep a center per process, which is "
                "not SILC. Train multi-device on the JAX backend with "
                "keras.distribution.DataParallel (see keras_silc.distribution)."
            )
