"""Named configurations, and preset folders of `SilcModel`.

A named preset reads like the paper's implementation details (Sec. 4.1): a dict of
`SilcModel` constructor arguments into which `SilcModel.from_preset(name, **overrides)` merges
overrides (nested dicts key by key). It builds random weights, unless the entry names a
`"handle"` (a preset folder or a keras-hub handle holding weights; no entry has one yet).

A preset folder (keras-hub's layout, `keras_silc.preset_files`) holds a trained model:
`SilcModel.save_to_preset(folder)` writes it, `SilcModel.from_preset(folder_or_handle)`
reads it. The preprocessor is found through Keras's registry, so models do not import data.
"""

import copy
import difflib
import os

import keras

from keras_silc import batch_format
from keras_silc import preset_files
from keras_silc.preset_files import classproperty

# Preset keys that describe the training views: they configure the model's preprocessor.
PREPROCESSOR_KEYS = ("num_global_crops", "num_local_crops", "local_crop_size")


def _tower(width, depth, heads):
    return {"width": width, "depth": depth, "num_heads": heads, "mlp_dim": 4 * width}


def _paper_preset(width, depth, heads, description):
    return {
        "description": description,
        "config": {
            "vision": {"image_size": 256, "patch_size": 16, **_tower(width, depth, heads)},
            "text": {
                "vocabulary_size": 32_000,
                "max_length": 64,
                "output_dim": width,
                "pooling": "last",
                "causal": False,
                **_tower(width, depth, heads),
            },
            "head": {
                "num_prototypes": 65_536,
                "hidden_dim": 2048,
                "bottleneck_dim": 256,
                "num_layers": 3,
            },
            "num_global_crops": 2,
            "num_local_crops": 8,
            "local_crop_size": 96,
            "teacher_momentum": 0.966,
            "center_momentum": 0.9,
            "teacher_temperature": 0.04,
            "student_temperature": 0.1,
            "recipe": {
                "learning_rate": 1e-3,
                "warmup_steps": 50_000,
                "cooldown_steps": 50_000,
                # 20B examples seen at batch 16k.
                "total_steps": 1_220_703,
                "weight_decay": 1e-4,
            },
        },
    }


PRESETS = {
    "silc_tiny": {
        "description": (
            "A toy model for tests and smoke runs: 32 px images, patch 8, 16 px local "
            "crops, width 32, 2 blocks, K = 256."
        ),
        "config": {
            "vision": {
                "image_size": 32,
                "patch_size": 8,
                "width": 32,
                "depth": 2,
                "num_heads": 2,
                "mlp_dim": 64,
            },
            "text": {
                "vocabulary_size": 256,
                "max_length": 16,
                "width": 32,
                "depth": 2,
                "num_heads": 2,
                "mlp_dim": 64,
                "output_dim": 32,
                "pooling": "last",
            },
            "head": {
                "num_prototypes": 256,
                "hidden_dim": 64,
                "bottleneck_dim": 32,
                "num_layers": 3,
            },
            "num_global_crops": 2,
            "num_local_crops": 4,
            "local_crop_size": 16,
            "recipe": {
                "learning_rate": 1e-3,
                "warmup_steps": 10,
                "cooldown_steps": 0,
                "total_steps": None,
                "weight_decay": 1e-4,
            },
        },
    },
    "silc_s16": _paper_preset(384, 12, 6, "ViT-S/16 towers at the paper's geometry."),
    "silc_b16": _paper_preset(768, 12, 12, "ViT-B/16 towers: the paper's main model."),
    "silc_l16": _paper_preset(1024, 24, 16, "ViT-L/16 towers at the paper's geometry."),
}


def merge_config(base, overrides):
    """Recursively merges `overrides` into a copy of `base` (dicts key by key)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def preset_config(name, **overrides):
    if name not in PRESETS or "config" not in PRESETS[name]:
        raise ValueError(
            f"Unknown preset {name!r}. Available presets: {', '.join(sorted(PRESETS))}."
        )
    return merge_config(PRESETS[name]["config"], overrides)


def preprocessor_config(config, geometry, tokenizer):
    """The serialized `SilcPreprocessor` of a model config: the image tower's size and patch,
    the given view geometry, and the views the model trains on; `tokenizer` a layer or its
    config. Deserialized through Keras's registry (`import keras_silc` registers the class),
    so models do not import data."""
    vision = config.get("vision", {})
    views = batch_format.required_keys(
        config.get("multi_view_contrastive", True), config.get("self_distillation", True)
    )
    return {
        "module": "keras_silc.data.preprocessor",
        "class_name": "SilcPreprocessor",
        "registered_name": "keras_silc>SilcPreprocessor",
        "config": {
            "name": "silc_preprocessor",
            "tokenizer": tokenizer,
            "image_size": vision.get("image_size", 256),
            "patch_size": vision.get("patch_size", 16),
            "views": [view for view in views if view != "text"],
            **geometry,
        },
    }


# --------------------------------------------------------------------- preset folders
def preset_listing():
    """`SilcModel.presets`: {name: {"description", "has_weights"[, "handle"]}}."""
    listing = {}
    for name, entry in PRESETS.items():
        listing[name] = {"description": entry["description"], "has_weights": "handle" in entry}
        if "handle" in entry:
            listing[name]["handle"] = entry["handle"]
    return listing


def _unknown_preset(preset):
    named = ", ".join(sorted(PRESETS))
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    if preset in BUILTIN_PRESETS:
        return ValueError(
            f"{preset!r} is a keras-hub preset, not a SilcModel preset: build a SilcModel from "
            f"it with SilcModel.from_keras_hub(keras_hub.models.Backbone.from_preset({preset!r}"
            f")). Named SilcModel presets: {named}."
        )
    if os.sep in preset or "/" in preset or preset.startswith("."):
        return FileNotFoundError(
            f"No preset folder at {preset!r}. Write one with SilcModel.save_to_preset(folder); "
            f"named presets: {named}."
        )
    close = difflib.get_close_matches(preset, list(PRESETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"Unknown preset {preset!r}.{hint} Available presets: {named}; or pass a folder written "
        "by SilcModel.save_to_preset, or a kaggle://, hf:// or gs:// handle."
    )


def load_model(cls, preset, load_weights=True, **overrides):
    """`SilcModel.from_preset`: a named preset, a preset folder or a handle."""
    from keras_silc.models.settings import setting_defaults
    from keras_silc.models.settings import validate_overrides

    if not isinstance(load_weights, bool):  # "no" would be truthy
        raise ValueError(f"load_weights must be True or False, got {load_weights!r}.")
    preset = preset_files.as_preset(preset)
    tokenizer = overrides.pop("tokenizer", None)  # a layer: not merged or copied
    validate_overrides(overrides, where=f"{cls.__name__}.from_preset override", model_class=cls)
    if preset in PRESETS:
        if "handle" not in PRESETS[preset]:
            return cls.from_config({**preset_config(preset, **overrides), "tokenizer": tokenizer})
        preset = PRESETS[preset]["handle"]
    elif not preset_files.is_handle(preset) and not os.path.isdir(preset):
        raise _unknown_preset(preset)
    config = preset_files.read_json(
        preset,
        preset_files.CONFIG_FILE,
        " Is it a folder written by SilcModel.save_to_preset?",
    )
    preset_files.registered_class(config, preset, preset_files.CONFIG_FILE, cls)
    preset_files.check_listed_files(preset)
    saved = config.get("config")
    where = f"{preset_files.CONFIG_FILE} of the preset {preset!r}:"
    if not isinstance(saved, dict):
        raise ValueError(
            f"{where} it has no 'config' object (the model's arguments). Write the preset "
            "again with save_to_preset."
        )
    # A hand-edited file gets the messages of --set (keras's own name no setting); Keras's
    # bookkeeping keys (name, dtype, trainable, preprocessor) are not settings.
    settings = setting_defaults(cls)
    validate_overrides(
        {key: saved[key] for key in saved if key in settings}, where=where, defaults=settings
    )
    geometry = {key: overrides.pop(key) for key in PREPROCESSOR_KEYS if key in overrides}
    model_config = merge_config(saved, overrides)
    if preset_files.exists(preset, preset_files.PREPROCESSOR_FILE):
        saved = preset_files.read_json(preset, preset_files.PREPROCESSOR_FILE)
        preprocessor_class = preset_files.registered_class(
            saved, preset, preset_files.PREPROCESSOR_FILE
        )
        model_config["preprocessor"] = preprocessor_class.from_preset(
            preset, tokenizer=tokenizer, **geometry
        )
    else:
        model_config.update(geometry, tokenizer=tokenizer)
    note = f" with the overrides {sorted(overrides)}" if overrides else ""
    try:
        model = cls.from_config(model_config)
    except ValueError as error:
        raise ValueError(
            f"The model of the preset {preset!r} ({preset_files.CONFIG_FILE}{note}, its "
            f"preprocessor and tokenizer) could not be built: {error}"
        ) from error
    if load_weights:
        preset_files.load_weights(model, preset, note)
    return model


def save_model(model, directory, overwrite=False):
    """`SilcModel.save_to_preset`: config.json (the preprocessor apart), model.weights.h5,
    the preprocessor's and tokenizer's files, metadata.json."""

    def write(folder):
        config = keras.saving.serialize_keras_object(model)
        config["config"]["preprocessor"] = None  # in preprocessor.json
        preset_files.write_json(folder, preset_files.CONFIG_FILE, config)
        model.save_weights(os.path.join(folder, preset_files.WEIGHTS_FILE))
        if model.preprocessor is not None:
            model.preprocessor._write_preset(folder)

    return preset_files.save(directory, model, write, overwrite)


class PresetLoading:
    """`SilcModel`'s constructors from presets and pretrained checkpoints, and
    `save_to_preset`."""

    @classproperty
    def presets(cls):
        """The named presets: {name: {"description", "has_weights"}}. None carries
        weights yet: each builds the architecture with random weights."""
        return preset_listing()

    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """A model and its preprocessor from a named preset (random weights), or from a
        preset folder or handle (`kaggle://`, `hf://`, `gs://`) written by `save_to_preset`:
        config, weights, preprocessor and tokenizer.

        Keyword overrides merge into the config (nested dicts key by key); the view geometry
        and `tokenizer=` go to the preprocessor. `load_weights=False` builds a folder's
        architecture with random weights.

        Example: `SilcModel.from_preset("silc_b16", contrastive_loss="siglip",
        head={"num_prototypes": 16384})`; `SilcModel.from_preset("my_preset")`.
        """
        return load_model(cls, preset, load_weights, **overrides)

    def save_to_preset(self, directory, overwrite=False):
        """Writes a keras-hub style preset folder that `from_preset` reads back: config.json,
        model.weights.h5, preprocessor.json, tokenizer.json, assets/tokenizer/ and
        metadata.json. Written whole or not at all; a folder that is not empty is refused
        unless `overwrite=True`."""
        return save_model(self, directory, overwrite)

    @classmethod
    def from_keras_hub(cls, source, tokenizer=None, **overrides):
        """A SilcModel whose towers, temperature (and SigLIP's bias) are a keras-hub SigLIP
        or CLIP model's, exactly; a new distillation head; the teacher a copy of the
        student. Overrides merge as in `from_preset`.

        `source`: a keras-hub preset name (e.g. "siglip_base_patch16_224", downloaded),
        handle or local preset folder, whose tokenizer comes along (ids as keras-hub's
        preprocessor makes them); or a `SigLIPBackbone` / `CLIPBackbone`. `tokenizer`: a
        `SilcTokenizer`, or a keras-hub SigLIP/CLIP tokenizer or preprocessor to wrap.
        """
        from keras_silc import interop

        return interop.model_from_keras_hub(cls, source, tokenizer, **overrides)

    @classmethod
    def from_huggingface(cls, directory, tokenizer=None, **overrides):
        """As `from_keras_hub`, from a local Hugging Face `SiglipModel` / `CLIPModel` folder
        (`config.json` and safetensors; no network, no `transformers`). Without `tokenizer`,
        the folder's own comes along where it has one (SigLIP's `spiece.model`; CLIP's
        `vocab.json` and `merges.txt`, or `tokenizer.json`), with keras-hub's settings."""
        from keras_silc import interop

        return interop.model_from_huggingface(cls, directory, tokenizer, **overrides)
