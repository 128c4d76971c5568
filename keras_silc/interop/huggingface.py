"""Hugging Face `SiglipModel` / `CLIPModel` checkpoints in a local folder -> `SilcModel`.

Reads `config.json` and the safetensors file(s) that `save_pretrained` writes
(`model.safetensors`, or shards listed in `model.safetensors.index.json`) with the
`safetensors` package, and the folder's own tokenizer where it has one (SigLIP's
`spiece.model`; CLIP's `vocab.json` and `merges.txt`, or `tokenizer.json`), read by keras-hub's
`SigLIPTokenizer` / `CLIPTokenizer`; neither `transformers` nor a network connection is needed.
"""

import json
import os

import numpy as np

from keras_silc.interop import common
from keras_silc.interop.keras_hub import silc_tokenizer_from_keras_hub
from keras_silc.models.settings import validate_overrides

HF_ACTIVATIONS = {
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_new": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
}
FAMILIES = ("siglip", "clip")


def _read_config(directory):
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No config.json in {directory!r}. Pass the folder that "
            "`SiglipModel.save_pretrained` or `huggingface-cli download` wrote."
        )
    with open(path) as f:
        config = json.load(f)
    family = config.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"{path} describes a {family!r} model; keras_silc loads Hugging Face "
            f"{' and '.join(FAMILIES)} checkpoints (model_type 'siglip' or 'clip'). SigLIP 2's "
            "NaFlex models ('siglip2') have a different patch embedding."
        )
    return family, config


def read_safetensors(directory):
    """{name: numpy array} of every tensor in the folder's safetensors file(s)."""
    from safetensors.numpy import load_file

    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(single):
        files = ["model.safetensors"]
    else:
        found = sorted(os.listdir(directory))
        raise FileNotFoundError(
            f"No model.safetensors (or model.safetensors.index.json) in {directory!r}; it "
            f"holds {found}. Save the model with `save_pretrained(..., "
            "safe_serialization=True)`."
        )
    tensors = {}
    for name in files:
        tensors.update(load_file(os.path.join(directory, name)))
    return tensors


def _activation(config, where):
    name = config.get("hidden_act", "gelu")
    if name not in HF_ACTIVATIONS:
        raise ValueError(
            f"The checkpoint's {where} uses hidden_act={name!r}; keras_silc supports "
            f"{sorted(HF_ACTIVATIONS)}."
        )
    return HF_ACTIVATIONS[name]


def _tower(config, where):
    width = config["hidden_size"]
    return {
        "width": width,
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "mlp_dim": config["intermediate_size"],
        "activation": _activation(config, where),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-6),
    }


def silc_config_from_huggingface(directory, **overrides):
    """The `SilcModel` config of a Hugging Face checkpoint folder, plus SILC's defaults
    and `overrides`. Pixel statistics come from `preprocessor_config.json` where present."""
    family, config = _read_config(directory)
    vision_config, text_config = config["vision_config"], config["text_config"]
    vision = {
        "image_size": vision_config["image_size"],
        "patch_size": vision_config["patch_size"],
        **_tower(vision_config, "vision tower"),
    }
    text = {
        "vocabulary_size": text_config["vocab_size"],
        "max_length": text_config["max_position_embeddings"],
        **_tower(text_config, "text tower"),
        "pad_token_id": None,  # see keras_silc.interop.keras_hub
    }
    pixels = _pixel_statistics(directory)
    if family == "siglip":
        if not vision_config.get("vision_use_head", True):
            raise ValueError(
                "This SigLIP checkpoint has no attention-pooling head (vision_use_head="
                "False); keras_silc's image tower needs one."
            )
        vision.update(common.SIGLIP_VISION)
        vision.update(pixels or common.SIGLIP_PIXELS)
        text.update(
            {
                "output_dim": text_config.get("projection_size") or text_config["hidden_size"],
                "pooling": "last",
                "causal": False,
            }
        )
    else:
        projection_dim = config.get("projection_dim", 512)
        vision.update({**common.CLIP_VISION, "output_dim": projection_dim})
        vision.update(pixels or common.OPENAI_CLIP_PIXELS)
        eos = text_config.get("eos_token_id", 2)
        text.update(
            {
                "output_dim": projection_dim,
                # Checkpoints from before transformers PR #24773 say eos_token_id=2 and
                # pool at the largest token id.
                "pooling": "argmax" if eos == 2 else "eos",
                "eos_token_id": None if eos == 2 else eos,
                "causal": True,
                "projection_bias": False,
            }
        )
    return common.silc_config(vision, text, family, overrides)


def _pixel_statistics(directory):
    path = os.path.join(directory, "preprocessor_config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        config = json.load(f)
    if "image_mean" not in config or "image_std" not in config:
        return None
    return {
        "pixel_mean": tuple(float(m) for m in config["image_mean"]),
        "pixel_std": tuple(float(s) for s in config["image_std"]),
    }


class _Checkpoint:
    """Tensors by name, transposed to Keras layouts, remembering which were used."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.used = set()

    def get(self, name):
        if name not in self.tensors:
            raise ValueError(
                f"The checkpoint has no tensor {name!r}; it is not a SiglipModel/CLIPModel "
                f"checkpoint of the expected layout (first names: {sorted(self.tensors)[:5]})."
            )
        self.used.add(name)
        return np.asarray(self.tensors[name])

    def linear(self, prefix, bias=True):
        """(in, out) kernel and bias of a torch Linear."""
        kernel = self.get(f"{prefix}.weight").T
        return kernel, self.get(f"{prefix}.bias") if bias else None

    def norm(self, prefix):
        return self.get(f"{prefix}.weight"), self.get(f"{prefix}.bias")

    def attention(self, prefix):
        return {
            "query": self.linear(f"{prefix}.q_proj"),
            "key": self.linear(f"{prefix}.k_proj"),
            "value": self.linear(f"{prefix}.v_proj"),
            "output": self.linear(f"{prefix}.out_proj"),
        }

    def packed_attention(self, prefix):
        """torch.nn.MultiheadAttention: one (3W, W) in_proj for query, key and value."""
        weight, bias = self.get(f"{prefix}.in_proj_weight"), self.get(f"{prefix}.in_proj_bias")
        w = weight.shape[1]
        return {
            "query": (weight[:w].T, bias[:w]),
            "key": (weight[w : 2 * w].T, bias[w : 2 * w]),
            "value": (weight[2 * w :].T, bias[2 * w :]),
            "output": self.linear(f"{prefix}.out_proj"),
        }


def _add_blocks(assigner, checkpoint, encoder, prefix):
    for i, block in enumerate(encoder.blocks):
        layer = f"{prefix}.encoder.layers.{i}"
        common.add_layer_norm(
            assigner, block.norm1, *checkpoint.norm(f"{layer}.layer_norm1"), f"{layer}.layer_norm1"
        )
        common.add_attention(
            assigner, block.attention, checkpoint.attention(f"{layer}.self_attn"), layer
        )
        common.add_layer_norm(
            assigner, block.norm2, *checkpoint.norm(f"{layer}.layer_norm2"), f"{layer}.layer_norm2"
        )
        common.add_dense(assigner, block.mlp.fc1, *checkpoint.linear(f"{layer}.mlp.fc1"), layer)
        common.add_dense(assigner, block.mlp.fc2, *checkpoint.linear(f"{layer}.mlp.fc2"), layer)
    extra = f"{prefix}.encoder.layers.{len(encoder.blocks)}.layer_norm1.weight"
    if extra in checkpoint.tensors:
        raise ValueError(
            f"The checkpoint has more {prefix} blocks than the model's {len(encoder.blocks)}; "
            "build the model with SilcModel.from_huggingface(directory)."
        )


def load_huggingface_weights(model, directory):
    """Copies a Hugging Face checkpoint's weights into `model` (built by
    `silc_config_from_huggingface`); the teacher becomes a copy of the student.

    Returns the number of variables assigned.
    """
    family, _ = _read_config(directory)
    checkpoint = _Checkpoint(read_safetensors(directory))
    assigner = common.WeightAssigner("Hugging Face")
    vision = model.student.encoder
    prefix = "vision_model"
    conv = checkpoint.get(f"{prefix}.embeddings.patch_embedding.weight").transpose(2, 3, 1, 0)
    conv_bias = (
        checkpoint.get(f"{prefix}.embeddings.patch_embedding.bias") if family == "siglip" else None
    )
    common.add_patch_embedding(assigner, vision.patch_embedding, conv, conv_bias, "patch_embedding")
    common.add_position_embedding(
        assigner,
        vision,
        checkpoint.get(f"{prefix}.embeddings.position_embedding.weight"),
        f"{prefix}.embeddings.position_embedding.weight",
    )
    if family == "clip":
        assigner.add(
            vision.class_embedding,
            checkpoint.get(f"{prefix}.embeddings.class_embedding"),
            "class_embedding",
        )
        common.add_layer_norm(
            assigner, vision.pre_norm_layer, *checkpoint.norm(f"{prefix}.pre_layrnorm"), "pre"
        )
    _add_blocks(assigner, checkpoint, vision, prefix)
    common.add_layer_norm(
        assigner, vision.final_norm, *checkpoint.norm(f"{prefix}.post_layernorm"), "post"
    )
    if family == "siglip":
        head, ours = f"{prefix}.head", vision.map_head
        assigner.add(ours.probe, checkpoint.get(f"{head}.probe"), f"{head}.probe")
        common.add_attention(
            assigner, ours.attention, checkpoint.packed_attention(f"{head}.attention"), head
        )
        common.add_layer_norm(assigner, ours.norm, *checkpoint.norm(f"{head}.layernorm"), head)
        common.add_dense(assigner, ours.mlp.fc1, *checkpoint.linear(f"{head}.mlp.fc1"), head)
        common.add_dense(assigner, ours.mlp.fc2, *checkpoint.linear(f"{head}.mlp.fc2"), head)
    else:
        common.add_dense(
            assigner,
            vision.projection,
            *checkpoint.linear("visual_projection", bias=False),
            "visual_projection",
        )

    text, prefix = model.text_encoder, "text_model"
    assigner.add(
        text.token_embedding.embeddings,
        checkpoint.get(f"{prefix}.embeddings.token_embedding.weight"),
        "token_embedding",
    )
    assigner.add(
        text.position_embedding,
        checkpoint.get(f"{prefix}.embeddings.position_embedding.weight"),
        "text position_embedding",
    )
    _add_blocks(assigner, checkpoint, text, prefix)
    common.add_layer_norm(
        assigner, text.final_norm, *checkpoint.norm(f"{prefix}.final_layer_norm"), "final"
    )
    if family == "siglip":
        common.add_dense(
            assigner, text.projection, *checkpoint.linear(f"{prefix}.head"), f"{prefix}.head"
        )
        assigner.add(model.logit_bias, checkpoint.get("logit_bias").reshape(()), "logit_bias")
    else:
        common.add_dense(
            assigner,
            text.projection,
            *checkpoint.linear("text_projection", bias=False),
            "text_projection",
        )
    assigner.add(model.log_logit_scale, checkpoint.get("logit_scale").reshape(()), "logit_scale")
    count = assigner.assign()
    common.copy_student_to_teacher(model)
    return count


# The tokenizer files of each family, as `save_pretrained` and the Hub's repositories hold them.
TOKENIZER_FILES = {"siglip": ("spiece.model",), "clip": ("vocab.json", "merges.txt")}


def _bpe_files(directory):
    """(vocabulary dict, merges list) of a CLIP folder, or None: `vocab.json` and
    `merges.txt` (its `#version` line left out), else the BPE model of `tokenizer.json`."""
    vocabulary, merges = (os.path.join(directory, name) for name in TOKENIZER_FILES["clip"])
    if os.path.isfile(vocabulary) and os.path.isfile(merges):
        with open(vocabulary, encoding="utf-8") as f:
            vocabulary = json.load(f)
        with open(merges, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        return vocabulary, [line for line in lines if line and not line.startswith("#version")]
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        model = json.load(f).get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(
            f"{path} holds a {model.get('type')!r} tokenizer model; a CLIP checkpoint's is "
            "'BPE'. Save the checkpoint's own tokenizer beside it (save_pretrained)."
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return model["vocab"], merges


def tokenizer_from_huggingface(directory, sequence_length):
    """The `SilcTokenizer` of a Hugging Face folder's own vocabulary (ids as keras-hub's
    SigLIP / CLIP preprocessor makes them), or None where the folder holds none."""
    import keras_hub

    family, _ = _read_config(directory)
    if family == "siglip":
        path = os.path.join(directory, TOKENIZER_FILES["siglip"][0])
        if not os.path.isfile(path):
            return None
        tokenizer = keras_hub.models.SigLIPTokenizer(proto=path)
    else:
        files = _bpe_files(directory)
        if files is None:
            return None
        tokenizer = keras_hub.models.CLIPTokenizer(vocabulary=files[0], merges=files[1])
    return silc_tokenizer_from_keras_hub(tokenizer, sequence_length)


def model_from_huggingface(cls, directory, tokenizer=None, **overrides):
    """`SilcModel.from_huggingface`: a `cls` built from the folder's config (with
    `overrides`) holding the folder's weights, with `tokenizer`, else the folder's own."""
    validate_overrides(
        overrides, where=f"{cls.__name__}.from_huggingface override", model_class=cls
    )
    config = silc_config_from_huggingface(directory, **overrides)
    if tokenizer is None:
        tokenizer = tokenizer_from_huggingface(directory, config["text"]["max_length"])
    model = cls.from_config({**config, "tokenizer": tokenizer})
    load_huggingface_weights(model, directory)
    return model
