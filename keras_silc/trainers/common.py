"""What the backend trainers share: the batch check before a step, the metrics, the
divergence guard around `fit`, and the compiled state of a loaded model."""

import keras
from keras import ops

from keras_silc import batch_format
from keras_silc.callbacks import with_divergence_guard
from keras_silc.checks import check_batch_values
from keras_silc.checks import check_model_inputs
from keras_silc.layers.photometric import apply_carried_photometric


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


_MAKE_BATCHES = (
    "make training batches from image-text pairs with keras_silc.data.training_dataset(pairs, "
    "model.preprocessor, batch_size)"
)


def check_training_data(x):
    """Refuses, before anything is traced, what `fit` would fail on deep inside Keras: image-text
    pairs instead of training batches, string arrays, arrays of different lengths, no rows."""
    spec = getattr(x, "element_spec", None)
    if isinstance(spec, dict) and "caption" in spec:
        raise ValueError(f"fit got a dataset of image-text pairs ('caption'): {_MAKE_BATCHES}.")
    if not isinstance(x, dict):
        return
    lengths = {}
    for key, value in x.items():
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind in ("U", "S", "O"):
            raise ValueError(
                f"fit got strings under {key!r}: batches hold pixels and token ids ('text'); "
                f"{_MAKE_BATCHES}, or tokenize with model.preprocessor.tokenize(captions)."
            )
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape):
            lengths[key] = int(shape[0])
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Every batch entry needs one row per example; got {lengths}.")
    if lengths and not max(lengths.values()):
        raise ValueError("fit got arrays with no rows: there is nothing to train on.")


class TrainerCommon:
    def required_keys(self):
        """The batch entries this model trains on."""
        return batch_format.required_keys(self.multi_view_contrastive, self.self_distillation)

    def prepare_batch(self, data):
        """Checks a batch of `fit` (at trace time: static shapes) and applies any photometric
        parameters it carries to its crops; the returned batch holds finished crops."""
        batch = unpack_batch(data)
        batch_format.validate_batch(
            batch,
            batch_format.BatchSpec(
                required=tuple(self.required_keys()),
                patch_size=self.vision_config.get("patch_size", 16),
                max_length=self.text_encoder.max_length,
                same_size_global_crops=self.multi_view_contrastive,
            ),
        )
        return apply_carried_photometric(batch, self.required_keys())

    @property
    def metrics(self):
        return self.trackers

    def update_metrics(self, aux):
        """Feeds the step's terms to the model's metrics; returns their results, the logs."""
        for tracker in self.trackers:
            tracker.update_state(aux[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.trackers}

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit` with a `DivergenceGuard`: a NaN or exploding loss stops
        training with the command line's message (pass your own guard to change it).
        In-memory batches (a dict of arrays) are value-checked first: token ids inside the
        vocabulary and images in [0, 1], which a traced step cannot check."""
        x = args[0] if args else kwargs.get("x")
        check_training_data(x)
        if isinstance(x, dict):
            check_batch_values(x, self.text_encoder.vocabulary_size)
        return super().fit(*args, callbacks=with_divergence_guard(callbacks), **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict` of `{"image": ...}` and/or `{"text": ...}`. Anything else
        is refused before the step is traced: under JAX an error inside the first predict
        step leaves the model's variables unset, and every later call fails."""
        check_model_inputs(x, "SilcModel.predict")
        return super().predict(x, *args, **kwargs)

    def compile_from_config(self, config):
        """Restores the compiled state on `keras.models.load_model`, also for a model saved
        on one backend and loaded on another."""
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


def scaled_steps(old_values, new_values, scales):
    """Each variable's optimizer step times its learning-rate factor, `old + s (new - old)`
    (layer-wise decay, `keras_silc.models.fine_tuning`); `new_values` when `scales` is None."""
    if scales is None:
        return new_values
    return [
        new if scale == 1.0 else old + scale * (new - old)
        for old, new, scale in zip(old_values, new_values, scales, strict=True)
    ]


def apply_optimizer(optimizer, grads, variables, scales):
    """`optimizer.apply` on variables, each step times its factor in `scales` (or None)."""
    if scales is None:
        optimizer.apply(grads, variables)
        return
    old = [
        None if scale == 1.0 else ops.copy(v.value)
        for v, scale in zip(variables, scales, strict=True)
    ]
    optimizer.apply(grads, variables)
    for variable, start, scale in zip(variables, old, scales, strict=True):
        if start is not None:
            variable.assign(scaled_steps([start], [variable.value], [scale])[0])
