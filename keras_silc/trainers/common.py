"""Helpers shared by the backend trainers."""

import keras


def unpack_batch(data):
    """`fit` hands over `x` or `(x,)` or `(x, y, ...)`; SILC batches are `x` alone."""
    if isinstance(data, (tuple, list)):
        if len(data) > 1 and data[1] is not None:
            raise ValueError(
                "SilcModel trains on batches with no targets: pass a dataset of dicts "
                "{'image', 'global_crops', 'local_crops', 'text'}, not (x, y) pairs."
            )
        data = data[0]
    return data


class CompiledStateLoading:
    """`compile_from_config` for a model saved on one backend and loaded on another."""

    def compile_from_config(self, config):
        """Restores the compiled state on `keras.models.load_model`."""
        optimizer = config.get("optimizer")
        if isinstance(optimizer, dict) and optimizer.get("module", "").startswith(
            "keras.src.backend."
        ):
            # Keras records PyTorch's optimizers under their backend module; use the
            # public class so that a file saved under torch trains under jax or tf.
            config = {**config, "optimizer": {**optimizer, "module": "keras.optimizers"}}
            config["optimizer"].pop("registered_name", None)
        config = keras.saving.deserialize_keras_object(config)
        # jit_compile is the saving backend's choice (True under JAX would turn on
        # torch.compile under PyTorch): let the loading backend pick its default.
        config.pop("jit_compile", None)
        self.compile(**config)
        self.optimizer.build(self.trainable_variables)
