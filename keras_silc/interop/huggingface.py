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
# transformers' defaults of the tower configs' settings read here. `save_pretrained` writes
# only the values that differ from them, so a published config.json (google/siglip-base-
# patch16-224's, for one) leaves the rest out.
# tests/test_interop.py checks this table against transformers' config classes.
_VIT_B = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
TOWER_DEFAULTS = {
    "siglip": {
        "vision_config": {
            **_VIT_B,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 16,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        "text_config": {
            **_VIT_B,
            "num_attention_heads": 12,
            "vocab_size": 32000,
            "max_position_embeddings": 64,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
    },
    "clip": {
        "vision_config": {
            **_VIT_B,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        "text_config": {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
    },
}
_FETCH_AGAIN = (
    "Download the checkpoint again (huggingface-cli download REPO --local-dir FOLDER), or "
    "write it again with save_pretrained."
)


class _Settings(dict):
    """A JSON object of config.json whose missing entries raise ValueError naming the file."""

    def __init__(self, values, where):
        super().__init__(values)
        self.where = where

    def __missing__(self, key):
        raise ValueError(
            f"{self.where} has no {key!r}: it is not a complete SiglipModel / CLIPModel "
            f"config. {_FETCH_AGAIN}"
        )

    def section(self, key, defaults=None):
        """The JSON object `key`, over `defaults` (the values it may leave out)."""
        value = self[key]
        if not isinstance(value, dict):
            raise ValueError(
                f"{self.where}'s {key!r} is a {type(value).__name__}, not a JSON object of the "
                f"tower's settings. {_FETCH_AGAIN}"
            )
        return _Settings({**(defaults or {}), **value}, f"{self.where}'s {key}")


def _read_json(path):
    """The JSON object in the file `path`; ValueError naming the file when it is damaged."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}): the file is damaged or incomplete. {_FETCH_AGAIN}"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a JSON {type(data).__name__}, not an object. {_FETCH_AGAIN}"
        )
    return data


def _folder(directory):
    """`directory` as a str, checked to be a local folder of the right kind."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            "from_huggingface takes the path of a local checkpoint folder (a str or path), got "
            f"{type(directory).__name__}."
        )
    directory = os.fspath(directory)
    common.check_source_kind(directory, "huggingface", "from_huggingface")
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No folder at {directory!r}. from_huggingface reads a local checkpoint folder: "
            "download it first (huggingface-cli download REPO --local-dir FOLDER) and pass "
            "FOLDER. (A keras-hub preset name loads with SilcModel.from_keras_hub.)"
        )
    return directory


def _read_config(directory):
    directory = _folder(directory)
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No config.json in {directory!r}. Pass the folder that "
            "`SiglipModel.save_pretrained` or `huggingface-cli download` wrote."
        )
    config = _Settings(_read_json(path), path)
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
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map of the shard files. {_FETCH_AGAIN}")
        files = sorted(set(weight_map.values()))
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
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{index} lists the shard {name!r}, which is not in {directory!r}: the folder "
                f"was copied incompletely. {_FETCH_AGAIN}"
            )
        try:
            tensors.update(load_file(path))
        except SafetensorError as error:
            raise ValueError(
                f"{path} is not a readable safetensors file ({error}): it is truncated or "
                f"damaged. {_FETCH_AGAIN}"
            ) from error
    return tensors


def _activation(config, where):
    name = config["hidden_act"]
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
        "layer_norm_epsilon": config["layer_norm_eps"],
    }


def silc_config_from_huggingface(directory, **overrides):
    """The `SilcModel` config of a Hugging Face checkpoint folder, plus SILC's defaults
    and `overrides`. Pixel statistics come from `preprocessor_config.json` where present."""
    family, config = _read_config(directory)
    vision_config = config.section("vision_config", TOWER_DEFAULTS[family]["vision_config"])
    text_config = config.section("text_config", TOWER_DEFAULTS[family]["text_config"])
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
    config = _read_json(path)
    if "image_mean" not in config or "image_std" not in config:
        return None
    return {
        "pixel_mean": _per_channel(config, "image_mean", path),
        "pixel_std": _per_channel(config, "image_std", path),
    }


def _per_channel(config, key, path):
    """Red, green and blue values; one number stands for all three, as transformers reads it."""
    value = config[key]

    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if number(value):
        value = [value] * 3
    if not (isinstance(value, list) and len(value) == 3 and all(map(number, value))):
        raise ValueError(
            f"{path}: {key} is {value!r}; keras_silc needs three numbers (red, green, blue), "
            "or one number for all three."
        )
    return tuple(float(x) for x in value)


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
    """(vocabulary dict, merges list, the files read) of a CLIP folder, or None: `vocab.json`
    and `merges.txt` (its `#version` line left out), else the BPE model of `tokenizer.json`.
    One of the pair without the other (and no `tokenizer.json`) is refused: half a
    tokenizer is no tokenizer, and the model would silently come without one."""
    names = TOKENIZER_FILES["clip"]
    vocabulary, merges = (os.path.join(directory, name) for name in names)
    found = [os.path.isfile(vocabulary), os.path.isfile(merges)]
    if all(found):
        vocabulary = _read_json(vocabulary)
        try:
            with open(merges, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError as error:
            raise ValueError(f"{merges} is not UTF-8 text ({error}). {_FETCH_AGAIN}") from None
        merges = [line for line in lines if line and not line.startswith("#version")]
        return vocabulary, merges, " and ".join(names)
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
        if any(found):
            has, lacks = names if found[0] else names[::-1]
            raise FileNotFoundError(
                f"{directory!r} has {has} but no {lacks}: CLIP's tokenizer needs both (or a "
                f"tokenizer.json). Copy {lacks} from the checkpoint's Hugging Face repository "
                "(or save the tokenizer with processor.save_pretrained(folder)), or pass "
                "tokenizer= to from_huggingface."
            )
        return None
    model = _read_json(path).get("model", {})
    model = model if isinstance(model, dict) else {}
    if model.get("type") != "BPE":
        raise ValueError(
            f"{path} holds a {model.get('type')!r} tokenizer model; a CLIP checkpoint's is "
            "'BPE'. Save the checkpoint's own tokenizer beside it (save_pretrained)."
        )
    if not isinstance(model.get("vocab"), dict) or not isinstance(model.get("merges"), list):
        raise ValueError(f"{path}: its BPE model has no vocab and merges. {_FETCH_AGAIN}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return model["vocab"], merges, "tokenizer.json"


def tokenizer_from_huggingface(directory, sequence_length):
    """The `SilcTokenizer` of a Hugging Face folder's own vocabulary (ids as keras-hub's
    SigLIP / CLIP preprocessor makes them), or None where the folder holds none."""
    import keras_hub

    family, _ = _read_config(directory)
    if family == "siglip":
        path = os.path.join(directory, TOKENIZER_FILES["siglip"][0])
        if not os.path.isfile(path):
            return None
        where, tokenizer_class, arguments = path, keras_hub.models.SigLIPTokenizer, {"proto": path}
    else:
        files = _bpe_files(directory)
        if files is None:
            return None
        vocabulary, merges, names = files
        where, tokenizer_class = f"{names} in {directory!r}", keras_hub.models.CLIPTokenizer
        arguments = {"vocabulary": vocabulary, "merges": merges}
    try:
        tokenizer = tokenizer_class(**arguments)
    except ImportError:
        raise
    except Exception as error:  # TensorFlow's InternalError for a damaged spiece.model
        raise ValueError(
            f"Could not read the tokenizer of {where} ({type(error).__name__}): the file is "
            f"damaged or incomplete. {_FETCH_AGAIN} Or pass tokenizer= to from_huggingface."
        ) from error
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
