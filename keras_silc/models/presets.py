"""Named configurations. Each reads like the paper's implementation details (Sec. 4.1).

A preset is a dict of `SilcModel` constructor arguments; `SilcModel.from_preset(name,
**overrides)` merges overrides into it (nested dicts are merged key by key).
"""

import copy

from keras_silc import batch_format

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
    if name not in PRESETS:
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
