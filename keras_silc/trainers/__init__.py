"""Backend plumbing for `SilcModel.train_step`: one small mixin per backend.

Each mixin only computes gradients and applies the optimizer; the objective
(`compute_losses`) and the post-step updates (`update_state_after_step`: EMA teacher,
center, metrics) are shared model code written with `keras.ops`.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "jax":
    from keras_silc.trainers.jax_trainer import JaxSilcTrainer as SilcTrainer
elif _BACKEND == "tensorflow":
    from keras_silc.trainers.tensorflow_trainer import TensorFlowSilcTrainer as SilcTrainer
elif _BACKEND == "torch":
    from keras_silc.trainers.torch_trainer import TorchSilcTrainer as SilcTrainer
else:
    raise ImportError(
        f"keras_silc supports the jax, tensorflow and torch backends; KERAS_BACKEND is "
        f"{_BACKEND!r}."
    )

__all__ = ["SilcTrainer"]
