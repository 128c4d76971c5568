"""What the keras-hub and Hugging Face converters share: telling a source of the wrong kind
from their own, the SILC defaults a pretrained two-tower model is extended with, and
assigning weights with errors that name them."""

import json
import os

import numpy as np
from keras import ops

from keras_silc.models.presets import PRESETS
from keras_silc.models.presets import merge_config

# The distillation head and crops added to a pretrained model: the paper's (silc_b16's)
# head (K = 65,536) and views (2 global crops at the model's resolution, 8 local crops).
SILC_DEFAULTS = {
    key: PRESETS["silc_b16"]["config"][key]
    for key in ("head", "num_global_crops", "num_local_crops")
}

# How each family's image tower differs from SILC's, whichever library it comes from.
# The towers take [0, 1] images and normalise them themselves.
SIGLIP_PIXELS = {"pixel_mean": (0.5, 0.5, 0.5), "pixel_std": (0.5, 0.5, 0.5)}
OPENAI_CLIP_PIXELS = {
    "pixel_mean": (0.48145466, 0.4578275, 0.40821073),
    "pixel_std": (0.26862954, 0.26130258, 0.27577711),
}
SIGLIP_VISION = {"output_dim": None, "pooling": "map"}
CLIP_VISION = {
    "pooling": "cls",
    "class_token": True,
    "pre_norm": True,
    "patch_bias": False,
    "projection_bias": False,
}


def local_crop_size(patch_size, image_size, target=96):
    """The multiple of the patch size nearest to the paper's 96 px local crops; for images
    no larger than that, nearest to the paper's ratio of local to global size (96 / 256)."""
    if target >= image_size:
        target = image_size * 96 / 256
    return max(patch_size, int(round(target / patch_size)) * patch_size)


def silc_config(vision, text, contrastive_loss, overrides):
    """A `SilcModel` config: converted towers, SILC's defaults, then user overrides."""
    config = merge_config(SILC_DEFAULTS, {})
    config.update(
        {
            "vision": vision,
            "text": text,
            "contrastive_loss": contrastive_loss,
            "local_crop_size": local_crop_size(vision["patch_size"], vision["image_size"]),
        }
    )
    return merge_config(config, overrides)


def folder_kind(folder):
    """What wrote a local folder, by its config.json (or metadata.json): ("keras_silc", class
    name), ("keras-hub", class name), ("huggingface", model_type), or None where neither file
    tells (missing, damaged: the converters' own checks report those)."""

    def read(name):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as file:
                data = json.load(file)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    config = read("config.json")
    registered = str(config.get("registered_name", ""))
    if registered.startswith("keras_silc>"):
        return "keras_silc", registered.split(">", 1)[1]
    metadata = read("metadata.json")  # a tokenizer's or preprocessor's preset has no config.json
    if "keras_silc_version" in metadata:
        return "keras_silc", metadata.get("class_name") or "SilcModel"
    if "model_type" in config:
        return "huggingface", config["model_type"]
    if str(config.get("module", "")).startswith("keras_hub"):
        return "keras-hub", config.get("class_name")
    return None


_LOADERS = {"keras-hub": "SilcModel.from_keras_hub", "huggingface": "SilcModel.from_huggingface"}


def check_source_kind(source, expected, converter):
    """Raises ValueError when `source`, a str given to `converter` ("from_keras_hub" or
    "from_huggingface"), is a keras_silc preset name, or a folder that another library (or
    keras_silc) wrote rather than `expected` ("keras-hub" or "huggingface"), naming what loads
    it. Anything else is left to the converter's own checks."""
    if os.path.isdir(source):
        kind = folder_kind(source)
    elif source in PRESETS:
        kind = ("keras_silc", "SilcModel")
    else:
        return
    if kind is None or kind[0] == expected:
        return
    library = {"keras-hub": "keras-hub preset", "huggingface": "Hugging Face checkpoint"}
    what, name = kind
    if what == "keras_silc":
        raise ValueError(
            f"{converter} got {source!r}, which is a keras_silc preset (a {name}), not a "
            f"{library[expected]}: load it with {name}.from_preset({source!r})."
        )
    described = f"model_type {name!r}" if what == "huggingface" else f"a {name}"
    raise ValueError(
        f"{converter} got {source!r}, which is a {library[what]} folder ({described}), not a "
        f"{library[expected]}: load it with {_LOADERS[what]}({source!r})."
    )


class WeightAssigner:
    """Collects (variable, array) pairs, checks every shape, then assigns them all.

    Nothing is assigned unless every shape matches, so a failed conversion leaves
    the model as it was. The error names the source weight, the target variable and
    both shapes.
    """

    def __init__(self, source_name):
        self.source_name = source_name
        self.pairs = []

    def add(self, variable, array, source_key):
        array = np.asarray(array)
        if tuple(array.shape) != tuple(variable.shape):
            raise ValueError(
                f"Cannot load {self.source_name} weight {source_key!r} with shape "
                f"{tuple(array.shape)} into {variable.path!r}, which has shape "
                f"{tuple(variable.shape)}. The two models' configurations disagree."
            )
        self.pairs.append((variable, array))

    def assign(self):
        for variable, array in self.pairs:
            variable.assign(array.astype(np.float32))
        return len(self.pairs)


def add_dense(assigner, dense, kernel, bias, key):
    """A Keras Dense from a (in, out) kernel and an optional bias."""
    assigner.add(dense.kernel, kernel, f"{key} kernel")
    if bias is not None or dense.bias is not None:
        if bias is None or dense.bias is None:
            raise ValueError(
                f"{assigner.source_name} weight {key!r} "
                f"{'has' if bias is not None else 'has no'} bias but {dense.path!r} "
                f"{'has none' if dense.bias is None else 'has one'}."
            )
        assigner.add(dense.bias, bias, f"{key} bias")


def add_layer_norm(assigner, norm, gamma, beta, key):
    assigner.add(norm.gamma, gamma, f"{key} scale")
    assigner.add(norm.beta, beta, f"{key} offset")


def add_attention(assigner, attention, weights, key):
    """Our MultiHeadAttention from {"query"|"key"|"value"|"output": (kernel, bias)}.

    Kernels are (in, out) matrices; heads are contiguous blocks of the width on
    both sides, as in Keras's and PyTorch's attention.
    """
    layers = {
        "query": attention.query,
        "key": attention.key,
        "value": attention.value,
        "output": attention.output_dense,
    }
    for name, dense in layers.items():
        kernel, bias = weights[name]
        add_dense(assigner, dense, kernel, bias, f"{key} {name}")


def add_patch_embedding(assigner, dense, conv_kernel, bias, key):
    """Our patch Dense from a (p, p, 3, width) convolution kernel (channels last).

    The patches are flattened as (row, column, channel), so the kernel reshapes.
    """
    conv_kernel = np.asarray(conv_kernel)
    p1, p2, channels, width = conv_kernel.shape
    add_dense(assigner, dense, conv_kernel.reshape(p1 * p2 * channels, width), bias, key)


def add_position_embedding(assigner, encoder, table, key):
    """The vision position table, (num_patches[+1], width): a class row goes first."""
    table = np.asarray(table)
    if encoder.class_token:
        assigner.add(encoder.class_position_embedding, table[0], f"{key}[0]")
        table = table[1:]
    assigner.add(encoder.position_embedding.embeddings, table, key)


def copy_student_to_teacher(model):
    """After loading the student: the EMA teacher starts as an exact copy."""
    if model.teacher is None:
        return
    for teacher_weight, student_weight in zip(
        model.teacher.weights, model.student.weights, strict=True
    ):
        # A copy: under JAX a shared buffer would be donated twice by the train step.
        teacher_weight.assign(ops.copy(student_weight.value))
