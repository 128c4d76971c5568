"""The image tower alone, for downstream use: pooled and dense features of images.

`SilcModel.image_feature_extractor()` copies the inference tower (the teacher for SILC)
into an `ImageFeatureExtractor`, a plain Keras model: save it as `.keras`, as a preset
folder (`save_to_preset` / `from_preset`), or `export` it for serving.
"""

import os

import keras

from keras_silc import preset_files
from keras_silc.layers.distillation_head import l2_normalize
from keras_silc.models.vision_encoder import VisionEncoder
from keras_silc.models.vision_encoder import float_pixels
from keras_silc.models.vision_encoder import on_batch


@keras.saving.register_keras_serializable(package="keras_silc")
class ImageFeatureExtractor(keras.Model):
    """Images (N, H, W, 3) in [0, 1] -> {"pooled": (N, J), "dense": (N, h, w, J)}.

    The features are those of `SilcModel.encode_image` and
    `SilcModel.dense_image_features`: L2-normalised by default, in the space shared
    with the text tower, so they compare with text embeddings by a dot product.

    Args:
        vision: dict. `VisionEncoder` arguments.
        normalize: bool. L2-normalise both outputs. Defaults to True.
        dense_source: "map_values", "tokens" or None (see
            `VisionEncoder.dense_features`).
    """

    def __init__(self, vision, normalize=True, dense_source=None, **kwargs):
        if dense_source not in (None, "map_values", "tokens"):
            raise ValueError(
                f"dense_source must be 'map_values', 'tokens' or None, got {dense_source!r}."
            )
        super().__init__(**kwargs)
        self.vision = dict(vision)
        self.normalize = normalize
        self.dense_source = dense_source
        self.encoder = VisionEncoder(**self.vision, name="encoder", dtype=self.dtype_policy)
        self.encoder.build()
        self.built = True

    @classmethod
    def from_encoder(cls, encoder, vision, normalize=True, dense_source=None):
        """An extractor with a copy of `encoder`'s weights (no buffer shared with it)."""
        extractor = cls(
            vision,
            normalize=normalize,
            dense_source=dense_source,
            name="image_features",
            dtype=encoder.dtype_policy,
        )
        for target, source in zip(extractor.encoder.weights, encoder.weights, strict=True):
            target.assign(keras.ops.copy(source.value))
        return extractor

    def call(self, images):
        images = float_pixels(images, self.compute_dtype, "ImageFeatureExtractor's images")
        pooled, dense = on_batch(
            lambda x: self.encoder.pooled_and_dense(x, self.dense_source), images
        )
        if self.normalize:
            pooled, dense = l2_normalize(pooled), l2_normalize(dense)
        return {"pooled": pooled, "dense": dense}

    def get_config(self):
        config = super().get_config()
        config.update(
            {"vision": self.vision, "normalize": self.normalize, "dense_source": self.dense_source}
        )
        return config

    def export(self, filepath, format="tf_saved_model", input_signature=None, **kwargs):
        """`keras.Model.export` with a default signature: float32 images of the tower's
        `image_size` and any batch size (the patch grid must be static).

        Under PyTorch, Keras writes a SavedModel only through `torch_xla`. Without it,
        save the extractor (`.keras` or `save_to_preset`) and export it under
        `KERAS_BACKEND=tensorflow` or `jax`: the saved file is backend-independent.
        """
        if input_signature is None:
            size = self.encoder.image_size
            input_signature = [keras.InputSpec(shape=(None, size, size, 3), dtype="float32")]
        if keras.backend.backend() == "torch" and format == "tf_saved_model":
            import importlib.util

            if importlib.util.find_spec("torch_xla") is None:
                raise RuntimeError(
                    "Under PyTorch, Keras exports a SavedModel only through torch_xla, which "
                    "is not installed. Save the extractor with `save_to_preset(directory)` (or "
                    "as .keras) and export it under KERAS_BACKEND=tensorflow or jax: "
                    "`ImageFeatureExtractor.from_preset(directory).export(path)`."
                )
        return super().export(filepath, format=format, input_signature=input_signature, **kwargs)

    # ------------------------------------------------------------- presets
    def save_to_preset(self, directory, overwrite=False):
        """Writes a preset folder: `config.json`, `model.weights.h5` and `metadata.json`,
        whole or not at all; a folder that is not empty is refused unless
        `overwrite=True`."""

        def write(folder):
            preset_files.write_json(folder, preset_files.CONFIG_FILE, self)
            self.save_weights(os.path.join(folder, preset_files.WEIGHTS_FILE))

        return preset_files.save(directory, self, write, overwrite)

    @classmethod
    def from_preset(cls, preset, load_weights=True):
        """Loads a folder or handle (`kaggle://`, `hf://`, `gs://`) written by
        `save_to_preset`."""
        preset = preset_files.as_preset(preset)
        config = preset_files.read_json(
            preset,
            preset_files.CONFIG_FILE,
            " Write one with `extractor.save_to_preset(folder)`.",
        )
        preset_files.registered_class(config, preset, preset_files.CONFIG_FILE, cls)
        preset_files.check_listed_files(preset)
        model = keras.saving.deserialize_keras_object(config)
        if load_weights:
            preset_files.load_weights(model, preset)
        return model
