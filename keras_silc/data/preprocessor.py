"""`SilcPreprocessor`: everything between raw image-text pairs and SILC's training batches."""

import dataclasses
import difflib
import warnings

import keras
import numpy as np

from keras_silc import batch_format
from keras_silc import preset_files
from keras_silc.checks import check_batch_values
from keras_silc.checks import positive_int
from keras_silc.checks import resolve_tokenizer
from keras_silc.data.augment import MultiCropConfig

# The preset / model-config keys that describe the views rather than the model.
GEOMETRY_KEYS = ("num_global_crops", "num_local_crops", "local_crop_size")
VIEWS = ("image", "global_crops", "local_crops")


@keras.saving.register_keras_serializable(package="keras_silc")
class SilcPreprocessor(keras.layers.Layer):
    """The tokenizer, the multi-crop views and the batch contract of a SILC model.

    As a keras-hub task carries its preprocessor, `SilcModel(..., preprocessor=...)` carries
    this one: it is saved in the model's `.keras` file (tokenizer vocabulary included) and
    `model.preprocessor` gives it back. `keras_silc.data.training_dataset(pairs,
    preprocessor, batch_size)` maps `{"image", "caption"}` pairs to training batches with it;
    `example_batch` makes a random batch of the format; `validate_batch` checks one.

    Args:
        tokenizer: a `keras_silc.data.SilcTokenizer`, or None (a model that only sees
            token ids). Its `sequence_length` is T.
        image_size: int. S, the side of the full image and of the global crops.
        patch_size: int. The image tower's patch size; S and s must be multiples of it.
        num_global_crops: int. G.
        num_local_crops: int. L.
        local_crop_size: int. s, the side of the local crops: below S (the paper's 96
            against 256); a larger one is warned about.
        views: the image views the batches carry, of "image", "global_crops" and
            "local_crops". `SilcModel.from_preset` keeps those the model trains on: no
            global crops without multi-view contrastive or self-distillation, no local
            crops without self-distillation. Defaults to all three.
        max_length: int or None. The text tower's longest input; the tokenizer must not
            pad beyond it. Defaults to the tokenizer's sequence length.
        vocabulary_size: int or None. The text tower's vocabulary; token ids must be
            below it.
        end_token_id: int or None. The end token a text tower with "eos" pooling pools
            at; the tokenizer must end captions with it.
        same_size_global_crops: bool. The global crops share the full image's size S, as
            a model with `multi_view_contrastive` needs. Defaults to True.
        augmentation: dict. `MultiCropConfig` fields other than the geometry (scales,
            flips, colour jitter, blur, `photometric="accelerator"`, ...), the defaults of
            `training_dataset`.

    Example:
    ```python
    model = keras_silc.SilcModel.from_preset("silc_tiny", tokenizer=tokenizer)
    batches = keras_silc.data.training_dataset(pairs, model.preprocessor, batch_size=32)
    model.fit(batches, steps_per_epoch=100)
    ```
    """

    def __init__(
        self,
        tokenizer=None,
        image_size=256,
        patch_size=16,
        num_global_crops=2,
        num_local_crops=8,
        local_crop_size=96,
        views=VIEWS,
        max_length=None,
        vocabulary_size=None,
        end_token_id=None,
        same_size_global_crops=True,
        augmentation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        if tokenizer is not None:
            resolve_tokenizer(self, tokenizer)  # a path or a non-callable is refused here
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}.")
        if augmentation is not None and not isinstance(augmentation, dict):
            raise ValueError(
                "augmentation must be a dict of MultiCropConfig settings (e.g. "
                f"{{'hue': 0.0}}), got {augmentation!r}."
            )
        for name, value in (("image_size", image_size), ("local_crop_size", local_crop_size)):
            if not isinstance(value, int) or value <= 0 or value % patch_size:
                raise ValueError(
                    f"{name}={value!r} must be a positive multiple of the patch size {patch_size}."
                )
        for name, value in (
            ("num_global_crops", num_global_crops),
            ("num_local_crops", num_local_crops),
        ):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}.")
        unknown = sorted(set(views) - set(VIEWS))
        if unknown or "image" not in views:
            raise ValueError(f"views must include 'image' and be among {VIEWS}; got {views!r}.")
        for view, count, needed_by in (
            ("global_crops", num_global_crops, "multi-view contrastive and self-distillation"),
            ("local_crops", num_local_crops, "self-distillation"),
        ):
            if view in views and count == 0:
                raise ValueError(
                    f"The model trains on {view} ({needed_by}) but num_{view} is 0: set it to "
                    "1 or more, or build the model without them (e.g. self_distillation=False)."
                )
        if "local_crops" in views and local_crop_size > image_size:
            warnings.warn(
                f"local_crop_size={local_crop_size} is larger than image_size={image_size}: the "
                "student's local crops would be upsampled past the teacher's global views, the "
                "reverse of SILC's local-to-global distillation (the paper resizes local crops "
                "to 96 and global ones to 256). Pass a local_crop_size below image_size.",
                stacklevel=2,
            )
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_global_crops = num_global_crops
        self.num_local_crops = num_local_crops
        self.local_crop_size = local_crop_size
        self.views = tuple(view for view in VIEWS if view in views)
        self.max_length = max_length
        self.vocabulary_size = vocabulary_size
        self.end_token_id = end_token_id
        self.same_size_global_crops = same_size_global_crops
        self.augmentation = dict(augmentation or {})
        self.multi_crop_config()  # bad augmentation settings fail here, not in tf.data
        if tokenizer is not None:
            self.check_tokenizer()
        self.built = True

    # -------------------------------------------------------------- contract
    @property
    def sequence_length(self):
        """T: the tokenizer's length, else the text tower's."""
        length = getattr(self.tokenizer, "sequence_length", None)
        return length or self.max_length

    def required_keys(self):
        return [*self.views, "text"]

    def batch_spec(self):
        return batch_format.BatchSpec(
            required=tuple(self.required_keys()),
            patch_size=self.patch_size,
            max_length=self.sequence_length,
            image_size=self.image_size,
            num_global_crops=self.num_global_crops,
            num_local_crops=self.num_local_crops,
            local_crop_size=self.local_crop_size,
            same_size_global_crops=self.same_size_global_crops and "global_crops" in self.views,
        )

    def validate_batch(self, batch):
        """Checks a batch against this preprocessor's geometry (keys, ranks, sizes, dtypes,
        photometric parameters) and, for host arrays, its values (token ids within the
        vocabulary, images in [0, 1]); raises ValueError naming the key."""
        batch_format.validate_batch(batch, self.batch_spec())
        vocabulary = self.vocabulary_size or getattr(self.tokenizer, "vocabulary_size", None)
        if vocabulary is not None:
            check_batch_values(batch, vocabulary)  # host arrays only: token ids, [0, 1] images

    def attach_text_tower(self, vocabulary_size, max_length, end_token_id=None):
        """Binds the preprocessor to a text tower (`SilcModel` does this when it takes
        the preprocessor) and checks that the tokenizer fits it."""
        self.vocabulary_size = vocabulary_size
        self.max_length = max_length
        self.end_token_id = end_token_id
        if self.tokenizer is not None:
            self.check_tokenizer()

    def check_tokenizer(self, tokenizer=None):
        """Checks that `tokenizer` (default: this preprocessor's) fits the text tower:
        vocabulary, length and end token."""
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        if not getattr(tokenizer, "has_vocabulary", True):
            return  # being loaded: the vocabulary arrives with the assets
        size = getattr(tokenizer, "vocabulary_size", None)
        if size is not None and self.vocabulary_size is not None and size > self.vocabulary_size:
            raise ValueError(
                f"The tokenizer has {size} tokens but the text tower embeds "
                f"{self.vocabulary_size}; build the model with text={{'vocabulary_size': {size}}}."
            )
        length = getattr(tokenizer, "sequence_length", None)
        if length is not None and self.max_length is not None and length > self.max_length:
            raise ValueError(
                f"The tokenizer pads to {length} tokens but the text tower's max_length is "
                f"{self.max_length}; set text={{'max_length': {length}}} or shorten the tokenizer."
            )
        # With "last" pooling any end token works: pads come last and the final position
        # attends to the whole caption. "eos" pooling must find the end token.
        end = getattr(tokenizer, "end_token_id", None)
        if not getattr(tokenizer, "add_end_token", True):
            end = None  # no end token in the ids
        if self.end_token_id is not None and end != self.end_token_id:
            raise ValueError(
                f"The text tower pools at eos_token_id={self.end_token_id} but the tokenizer "
                f"ends captions with id {end}; set text={{'eos_token_id': {end}}}."
            )

    def tokenize(self, texts):
        """Token ids (N, T) of captions."""
        return resolve_tokenizer(self)(texts)

    # ----------------------------------------------------------------- views
    def multi_crop_config(self, **overrides):
        """The `MultiCropConfig` of the views: this preprocessor's geometry and
        augmentation, with `overrides` on top."""
        fields = {
            "image_size": self.image_size,
            "num_global_crops": self.num_global_crops if "global_crops" in self.views else 0,
            "local_crop_size": self.local_crop_size,
            "num_local_crops": self.num_local_crops if "local_crops" in self.views else 0,
            **self.augmentation,
            **overrides,
        }
        known = {field.name for field in dataclasses.fields(MultiCropConfig)} | {"color_jitter"}
        unknown = sorted(set(fields) - known)
        if unknown:
            close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
            hints = [f"{name!r} (did you mean {match[0]!r}?)" if match else repr(name)
                     for name, match in close.items()]  # fmt: skip
            raise ValueError(
                f"Unknown augmentation setting(s) {', '.join(hints)}. The settings are "
                f"MultiCropConfig's fields: {', '.join(sorted(known))}."
            )
        return MultiCropConfig(**fields)

    def example_batch(self, batch_size=8, seed=0):
        """A random numpy batch in the training format, for this geometry (every view)."""
        batch_size = positive_int(batch_size, "batch_size")
        rng = np.random.default_rng(seed)
        vocabulary = self.vocabulary_size or getattr(self.tokenizer, "vocabulary_size", None)
        length = self.sequence_length
        if vocabulary is None or length is None:
            raise ValueError(
                "example_batch needs the vocabulary size and the text length: give the "
                "preprocessor a tokenizer, or vocabulary_size= and max_length=."
            )
        text = rng.integers(1, vocabulary, size=(batch_size, length), dtype=np.int32)
        lengths = rng.integers(1, length + 1, size=(batch_size, 1))
        text = np.where(np.arange(length)[None, :] < lengths, text, 0).astype(np.int32)

        def uniform(*shape):
            return rng.random(shape, dtype=np.float32)

        s_global, s_local = self.image_size, self.local_crop_size
        return {
            "image": uniform(batch_size, s_global, s_global, 3),
            "global_crops": uniform(batch_size, self.num_global_crops, s_global, s_global, 3),
            "local_crops": uniform(batch_size, self.num_local_crops, s_local, s_local, 3),
            "text": text,
        }

    # --------------------------------------------------------------- presets
    def save_to_preset(self, directory, overwrite=False):
        """Writes a preset folder as keras-hub's preprocessors do: `preprocessor.json`, and
        the tokenizer's `tokenizer.json` and `assets/tokenizer/`, plus `metadata.json`. Read
        it with `from_preset`. A folder that is not empty is refused unless
        `overwrite=True`."""
        return preset_files.save(directory, self, self._write_preset, overwrite)

    def _write_preset(self, directory):
        """Writes this preprocessor's files into `directory` (`SilcModel.save_to_preset`
        calls it for the model's preprocessor)."""
        preset_files.write_json(directory, preset_files.PREPROCESSOR_FILE, self)
        if self.tokenizer is not None:
            self.tokenizer._write_preset(directory)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Loads the preprocessor of a preset folder or handle (one written by
        `save_to_preset` or `SilcModel.save_to_preset`), with its tokenizer's vocabulary.

        Args:
            preset: str. A folder, or a handle keras-hub resolves (`kaggle://`, `hf://`,
                `gs://`).
            **kwargs: constructor arguments that replace the saved ones, e.g.
                `num_local_crops=6`, or `tokenizer=` another tokenizer (the preset's
                vocabulary is then not read).
        """
        preset = preset_files.as_preset(preset)
        config = preset_files.read_json(
            preset,
            preset_files.PREPROCESSOR_FILE,
            " Write one with SilcPreprocessor.save_to_preset(folder) or "
            "SilcModel.save_to_preset(folder).",
        )
        preset_files.registered_class(config, preset, preset_files.PREPROCESSOR_FILE, cls)
        if kwargs.get("tokenizer") is None:
            kwargs.pop("tokenizer", None)  # None: the preset's own
        preprocessor = cls.from_config({**config["config"], **kwargs})
        if "tokenizer" not in kwargs and preprocessor.tokenizer is not None:
            preprocessor.tokenizer.load_preset_assets(preset)
            try:
                preprocessor.check_tokenizer()
            except ValueError as error:
                raise ValueError(
                    f"The tokenizer ({preset_files.TOKENIZER_ASSET_DIR}/) does not fit the text "
                    f"tower of {preset_files.PREPROCESSOR_FILE} in the preset {preset!r}: {error}"
                ) from error
        return preprocessor

    # ---------------------------------------------------------------- config
    @classmethod
    def from_config(cls, config):
        """Rebuilds the preprocessor; a bad setting raises its own error (Keras's
        `Layer.from_config` would wrap it in a TypeError)."""
        config = dict(config)
        augmentation = dict(config.get("augmentation") or {})
        removed = augmentation.pop("color_jitter", None)  # an option of earlier versions
        if removed is not None:
            config["augmentation"] = augmentation
            if removed != "fused":
                warnings.warn(
                    f"This preprocessor was saved with augmentation color_jitter={removed!r}, "
                    "an option that keras-silc has since removed: its views now use the "
                    "affine colour map per crop (the former 'fused'), which differs from "
                    "torchvision's clipped ops only where an intermediate value clipped and "
                    "in the hue model. The model itself is unchanged.",
                    stacklevel=2,
                )
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tokenizer": (
                    keras.saving.serialize_keras_object(self.tokenizer)
                    if self.tokenizer is not None
                    else None
                ),
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "num_global_crops": self.num_global_crops,
                "num_local_crops": self.num_local_crops,
                "local_crop_size": self.local_crop_size,
                "views": list(self.views),
                "max_length": self.max_length,
                "vocabulary_size": self.vocabulary_size,
                "end_token_id": self.end_token_id,
                "same_size_global_crops": self.same_size_global_crops,
                "augmentation": self.augmentation,
            }
        )
        return config
