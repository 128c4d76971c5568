"""keras-hub `SigLIPBackbone` and `CLIPBackbone` (or their presets) -> `SilcModel`, weight
for weight, with the preset's own tokenizer.

The towers map onto `VisionEncoder` / `TextEncoder` with the switches those layers
have for this: SigLIP keeps its MAP head, last-token text pooling and unmasked
padding; CLIP gets a class token, a LayerNorm before the blocks, class-token and
largest-id (end token) pooling, and bias-free projections. The tokenizer is keras-hub's
(SigLIP's SentencePiece, CLIP's byte-pair `CLIPTokenizer`) wrapped in a `SilcTokenizer`
with the settings of keras-hub's `SigLIPPreprocessor` / `CLIPPreprocessor`, so that the
ids are keras-hub's.
"""

import os

import numpy as np
from keras import ops

from keras_silc import preset_files
from keras_silc.data.tokenizer import SilcTokenizer
from keras_silc.interop import common
from keras_silc.models.settings import validate_overrides

_ACTIVATIONS = {"gelu_approximate": "gelu_approximate", "quick_gelu": "quick_gelu", "gelu": "gelu"}


def _numpy(variable):
    return ops.convert_to_numpy(variable)


def _activation(name, where):
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(
            f"The keras-hub {where} uses the activation {name!r}; keras_silc supports "
            f"{sorted(_ACTIVATIONS)}."
        )
    return _ACTIVATIONS[name]


def _family(backbone):
    import keras_hub

    if isinstance(backbone, keras_hub.models.SigLIPBackbone):
        return "siglip"
    if isinstance(backbone, keras_hub.models.CLIPBackbone):
        return "clip"
    raise ValueError(
        f"from_keras_hub supports keras_hub.models.SigLIPBackbone and CLIPBackbone (or a "
        f"preset of one); got {type(backbone).__name__}. Pass e.g. the preset name "
        "'siglip_base_patch16_224' or keras_hub.models.SigLIPBackbone.from_preset(...)."
    )


def _square_image_size(encoder):
    height, width = encoder.image_shape[0], encoder.image_shape[1]
    if encoder.image_shape[-1] != 3 or height != width:
        raise ValueError(
            f"The keras-hub vision encoder takes images of shape {encoder.image_shape}; "
            "keras_silc converts square channels-last RGB towers only."
        )
    return int(height)


def silc_config_from_keras_hub(backbone, **overrides):
    """The `SilcModel` config of a keras-hub backbone, plus SILC's defaults and overrides."""
    family = _family(backbone)
    vision_encoder, text_encoder = backbone.vision_encoder, backbone.text_encoder
    tower = {
        "image_size": _square_image_size(vision_encoder),
        "patch_size": vision_encoder.patch_size,
        "width": vision_encoder.hidden_dim,
        "depth": vision_encoder.num_layers,
        "num_heads": vision_encoder.num_heads,
        "mlp_dim": vision_encoder.intermediate_dim,
        "activation": _activation(vision_encoder.intermediate_activation, "vision encoder"),
    }
    text = {
        "vocabulary_size": text_encoder.vocabulary_size,
        "width": text_encoder.hidden_dim,
        "depth": text_encoder.num_layers,
        "num_heads": text_encoder.num_heads,
        "mlp_dim": text_encoder.intermediate_dim,
        "activation": _activation(text_encoder.intermediate_activation, "text encoder"),
        "max_length": text_encoder.max_sequence_length,
        # Both families attend to padding (SigLIP) or do not need to (CLIP is causal
        # and pools at the end token, before any padding).
        "pad_token_id": None,
    }
    if text_encoder.embedding_dim != text_encoder.hidden_dim:
        raise ValueError(
            f"The keras-hub text encoder embeds tokens in {text_encoder.embedding_dim} "
            f"dimensions but its blocks are {text_encoder.hidden_dim} wide; keras_silc "
            "needs them equal."
        )
    if family == "siglip":
        vision = {
            **tower,
            **common.SIGLIP_VISION,
            "layer_norm_epsilon": vision_encoder.layer_norm_epsilon,
            **common.SIGLIP_PIXELS,
        }
        text.update(
            {
                "output_dim": text_encoder.projection_dim,
                "pooling": "last",
                "causal": False,
                "layer_norm_epsilon": text_encoder.layer_norm_epsilon,
            }
        )
        contrastive = "siglip"
    else:
        projection_dim = backbone.vision_projection.units
        vision = {
            **tower,
            **common.CLIP_VISION,
            "output_dim": projection_dim,
            "layer_norm_epsilon": 1e-5,
            **common.OPENAI_CLIP_PIXELS,
        }
        text.update(
            {
                "output_dim": backbone.text_projection.units,
                "pooling": "argmax",
                "causal": True,
                "layer_norm_epsilon": 1e-5,
                # keras-hub's CLIP text tower ends with a LayerNorm of epsilon 1e-6.
                "final_norm_epsilon": 1e-6,
                "projection_bias": False,
            }
        )
        contrastive = "clip"
    return common.silc_config(vision, text, contrastive, overrides)


def _keras_attention(attention):
    """A keras.layers.MultiHeadAttention as (in, out) kernels and flat biases."""

    def flat(dense, output=False):
        kernel = _numpy(dense.kernel)
        kernel = (
            kernel.reshape(-1, kernel.shape[-1]) if output else kernel.reshape(kernel.shape[0], -1)
        )
        bias = None if dense.bias is None else _numpy(dense.bias).reshape(-1)
        return kernel, bias

    return {
        "query": flat(attention.query_dense),
        "key": flat(attention.key_dense),
        "value": flat(attention.value_dense),
        "output": flat(attention.output_dense, output=True),
    }


def _position_table(embedding):
    """The position rows the layer adds, in order: its table gathered at its
    `position_ids` variable. (A freshly built keras-hub CLIP leaves those ids at zero,
    so every patch gets row 0; presets load them as 0, 1, 2, ...)"""
    table = _numpy(embedding.position_embedding.embeddings)
    ids = getattr(embedding, "position_ids", None)
    if ids is None:
        return table
    return table[_numpy(ids).reshape(-1).astype(np.int64)]


def _dense(layer):
    return _numpy(layer.kernel), None if layer.bias is None else _numpy(layer.bias)


def _norm(layer):
    return _numpy(layer.gamma), _numpy(layer.beta)


def _add_blocks(assigner, ours, theirs, family, key):
    for i, (block, layer) in enumerate(zip(ours.blocks, theirs.encoder_layers, strict=True)):
        where = f"{key}.encoder_layers[{i}]"
        if family == "siglip":
            norm1, norm2, attention = layer.layer_norm1, layer.layer_norm2, layer.self_attn
            fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
        else:
            norm1, norm2, attention = layer.layer_norm_1, layer.layer_norm_2, layer.attention
            fc1, fc2 = layer.dense_1, layer.dense_2
        common.add_layer_norm(assigner, block.norm1, *_norm(norm1), f"{where} norm1")
        common.add_attention(assigner, block.attention, _keras_attention(attention), where)
        common.add_layer_norm(assigner, block.norm2, *_norm(norm2), f"{where} norm2")
        common.add_dense(assigner, block.mlp.fc1, *_dense(fc1), f"{where} fc1")
        common.add_dense(assigner, block.mlp.fc2, *_dense(fc2), f"{where} fc2")


def load_keras_hub_weights(model, backbone):
    """Copies a keras-hub backbone's weights into `model` (built by
    `silc_config_from_keras_hub`): the student's encoder, the text tower and the
    temperature (and SigLIP's bias); the teacher becomes a copy of the student.

    Returns the number of variables assigned.
    """
    family = _family(backbone)
    assigner = common.WeightAssigner("keras-hub")
    vision, theirs = model.student.encoder, backbone.vision_encoder
    if vision.width != theirs.hidden_dim or len(vision.blocks) != theirs.num_layers:
        raise ValueError(
            f"The model's image tower ({vision.width} wide, {len(vision.blocks)} blocks) "
            f"does not match the backbone's ({theirs.hidden_dim}, {theirs.num_layers}); "
            "build it with SilcModel.from_keras_hub(backbone)."
        )
    embedding = theirs.embedding
    common.add_patch_embedding(
        assigner, vision.patch_embedding, *_dense(embedding.patch_embedding), "patch_embedding"
    )
    common.add_position_embedding(
        assigner, vision, _position_table(embedding), "position_embedding"
    )
    if family == "siglip":
        _add_blocks(assigner, vision, theirs, family, "vision_encoder")
        common.add_layer_norm(
            assigner, vision.final_norm, *_norm(theirs.post_layer_norm), "post_layer_norm"
        )
        head = theirs.head
        assigner.add(vision.map_head.probe, _numpy(head.probe), "head.probe")
        common.add_attention(
            assigner, vision.map_head.attention, _keras_attention(head.attention), "head"
        )
        common.add_layer_norm(assigner, vision.map_head.norm, *_norm(head.layer_norm), "head")
        common.add_dense(assigner, vision.map_head.mlp.fc1, *_dense(head.mlp.fc1), "head fc1")
        common.add_dense(assigner, vision.map_head.mlp.fc2, *_dense(head.mlp.fc2), "head fc2")
    else:
        assigner.add(vision.class_embedding, _numpy(embedding.class_embedding), "class_embedding")
        common.add_layer_norm(
            assigner, vision.pre_norm_layer, *_norm(theirs.pre_layer_norm), "pre_layer_norm"
        )
        _add_blocks(assigner, vision, theirs, family, "vision_encoder")
        common.add_layer_norm(assigner, vision.final_norm, *_norm(theirs.layer_norm), "layer_norm")
        common.add_dense(
            assigner, vision.projection, *_dense(backbone.vision_projection), "vision_projection"
        )

    text, theirs = model.text_encoder, backbone.text_encoder
    embedding = theirs.embedding
    assigner.add(
        text.token_embedding.embeddings,
        _numpy(embedding.token_embedding.embeddings),
        "token_embedding",
    )
    if family == "siglip":
        position = _position_table(embedding)
    else:  # keras_hub's TokenAndPositionEmbedding: rows 0..T-1 in order
        position = _numpy(embedding.position_embedding.position_embeddings)
    assigner.add(text.position_embedding, position, "text position_embedding")
    _add_blocks(assigner, text, theirs, family, "text_encoder")
    if family == "siglip":
        common.add_layer_norm(
            assigner, text.final_norm, *_norm(theirs.post_layer_norm), "post_layer_norm"
        )
        common.add_dense(assigner, text.projection, *_dense(theirs.head), "text head")
        head = backbone.siglip_head
        assigner.add(model.logit_bias, _numpy(head.logit_bias), "siglip_head.logit_bias")
    else:
        common.add_layer_norm(assigner, text.final_norm, *_norm(theirs.layer_norm), "layer_norm")
        common.add_dense(
            assigner, text.projection, *_dense(backbone.text_projection), "text_projection"
        )
        head = backbone.clip_head
    assigner.add(model.log_logit_scale, np.asarray(_numpy(head.logit_scale)), "logit_scale")
    count = assigner.assign()
    common.copy_student_to_teacher(model)
    return count


# ----------------------------------------------------------------- presets and tokenizers
def _preprocessor_class(family):
    import keras_hub

    return {
        "siglip": keras_hub.models.SigLIPPreprocessor,
        "clip": keras_hub.models.CLIPPreprocessor,
    }[family]


def _load_preset(source, with_tokenizer=True):
    """(backbone, keras-hub preprocessor or None) of a keras-hub preset name, handle or
    folder."""
    import keras_hub

    common.check_source_kind(source, "keras-hub", "from_keras_hub")
    local = os.path.exists(source)
    if local:
        for name in ("config.json", "tokenizer.json")[: 2 if with_tokenizer else 1]:
            if not os.path.isfile(os.path.join(source, name)):
                raise FileNotFoundError(
                    f"The keras-hub preset folder {source!r} has no {name}. Write one with "
                    "keras-hub's backbone.save_to_preset(folder) and "
                    "tokenizer.save_to_preset(folder) (or preprocessor.save_to_preset), or "
                    "pass a backbone object and tokenizer= to from_keras_hub."
                )
    elif "://" not in source and ("/" in source or os.sep in source):
        raise FileNotFoundError(
            f"No keras-hub preset folder at {source!r}. Pass an existing folder written by "
            "keras-hub's save_to_preset, a preset name such as 'siglip_base_patch16_224', or "
            "a 'kaggle://' / 'hf://' handle."
        )
    try:
        backbone = keras_hub.models.Backbone.from_preset(source)
        family = _family(backbone)
        # preprocessor.json's settings where the preset has one, else keras-hub's defaults
        # around the preset's tokenizer. The image converter is not needed: the towers
        # normalise [0, 1] images themselves.
        preprocessor = None
        if with_tokenizer:
            preprocessor = _preprocessor_class(family).from_preset(source, image_converter=None)
    except Exception as error:
        # Checked first: some offline errors are also FileNotFoundErrors (huggingface_hub's).
        if not local and preset_files.unreachable(error):
            raise _offline_error(source, error) from error
        if not isinstance(error, (FileNotFoundError, ValueError)):
            raise
        if local:
            raise type(error)(
                f"Could not load the keras-hub preset folder {source!r}: {error}"
            ) from error
        raise ValueError(
            f"Could not load the keras-hub preset {source!r}: {error} A preset name (see "
            "keras_hub.models.SigLIPBackbone.presets and CLIPBackbone.presets) or a "
            "'kaggle://' / 'hf://' handle downloads its files, which needs network access; "
            "offline, pass a local folder written by keras-hub's save_to_preset."
        ) from error
    _check_weights_file(backbone, source)
    return backbone, preprocessor


def load_backbone(source):
    """The keras-hub backbone of a preset name, handle or folder, without its tokenizer, with
    the same errors as `from_keras_hub` (offline, a folder of another kind, ...)."""
    return _load_preset(os.fspath(source), with_tokenizer=False)[0]


def _offline_error(source, error):
    """The ValueError for a preset name or handle whose host could not be reached."""
    from keras_hub.src.utils import preset_utils

    builtin = preset_utils.BUILTIN_PRESETS.get(source, {})
    scheme = builtin.get("kaggle_handle", source).split("://")[0]
    host = {"kaggle": "Kaggle", "hf": "Hugging Face"}.get(scheme, f"its {scheme}:// location")
    preprocessor = {"siglip": "SigLIPPreprocessor", "clip": "CLIPPreprocessor"}.get(
        builtin.get("metadata", {}).get("path"), "SigLIPPreprocessor (CLIPPreprocessor for CLIP)"
    )
    cause = error  # the root cause is the shortest account: "Name or service not known"
    while cause.__cause__ or cause.__context__:
        cause = cause.__cause__ or cause.__context__
    detail = str(cause).split("\n")[0]
    return ValueError(
        f"from_keras_hub needs network access to download {source!r} from {host}, and the "
        f"host could not be reached ({type(cause).__name__}: {detail}). "
        "Offline, pass a local preset folder instead: where there is network, write one with "
        f"keras_hub.models.Backbone.from_preset({source!r}).save_to_preset(folder) and "
        f"keras_hub.models.{preprocessor}.from_preset({source!r}).save_to_preset(folder), "
        "then copy the folder here and pass its path."
    )


def _check_weights_file(backbone, source):
    """Refuses a preset whose model.weights.h5 does not fit its config.json (keras-hub loads a
    file of other blocks without a word, leaving the rest at random)."""
    from keras_hub.src.utils import preset_utils

    path = preset_utils.get_file(source, preset_files.WEIGHTS_FILE)
    mismatch = preset_files.shape_mismatch(backbone, path)
    if mismatch:
        raise ValueError(
            f"The keras-hub preset {source!r}: its {preset_files.WEIGHTS_FILE} does not fit "
            f"its {preset_files.CONFIG_FILE} ({mismatch}). Both must come from the same "
            "save_to_preset: write the preset again, or copy the folder again whole."
        )


def silc_tokenizer_from_keras_hub(tokenizer, sequence_length):
    """A `SilcTokenizer` whose ids are those of keras-hub's SigLIP or CLIP preprocessor.

    Args:
        tokenizer: a keras-hub `SigLIPTokenizer` or `CLIPTokenizer` (wrapped with the
            defaults of keras-hub's `SigLIPPreprocessor` / `CLIPPreprocessor`), or such a
            preprocessor (its settings: end-token padding, start token, lower-casing or
            SigLIP's canonicalisation).
        sequence_length: int. The text tower's `max_length`: T is the preprocessor's
            `sequence_length`, at most this.
    """
    import keras_hub

    models = keras_hub.models
    if isinstance(tokenizer, (models.SigLIPTokenizer, models.CLIPTokenizer)):
        family = "siglip" if isinstance(tokenizer, models.SigLIPTokenizer) else "clip"
        preprocessor = _preprocessor_class(family)(tokenizer, sequence_length=sequence_length)
    elif isinstance(tokenizer, (models.SigLIPPreprocessor, models.CLIPPreprocessor)):
        preprocessor = tokenizer
    else:
        raise TypeError(
            "from_keras_hub's tokenizer must be a keras_silc SilcTokenizer, or a keras-hub "
            "SigLIPTokenizer, CLIPTokenizer, SigLIPPreprocessor or CLIPPreprocessor; got "
            f"{type(tokenizer).__name__}."
        )
    inner = preprocessor.tokenizer
    siglip = isinstance(preprocessor, models.SigLIPPreprocessor)
    wrapped = SilcTokenizer(
        inner,
        min(int(preprocessor.sequence_length), int(sequence_length)),
        lowercase=not siglip and preprocessor.to_lower,
        canonicalize_text=siglip and preprocessor.canonicalize_text,
        add_start_token=preprocessor.add_start_token,
        add_end_token=preprocessor.add_end_token,
        # SigLIP pads with its end token "</s>"; CLIP with id 0 unless told otherwise.
        pad_with_end_token=inner.pad_token_id == inner.end_token_id,
    )
    theirs = (inner.pad_token_id, inner.end_token_id)
    if (wrapped.pad_token_id, wrapped.end_token_id) != theirs:
        raise ValueError(
            f"The keras-hub tokenizer pads with id {theirs[0]} and ends with id {theirs[1]}, "
            f"but its vocabulary file says {wrapped.pad_token_id} and {wrapped.end_token_id}; "
            "the preset's tokenizer.json and vocabulary disagree."
        )
    return wrapped


def model_from_keras_hub(model_cls, source, tokenizer=None, **overrides):
    """`SilcModel.from_keras_hub`: see there."""
    import keras_hub

    validate_overrides(
        overrides, where=f"{model_cls.__name__}.from_keras_hub override", model_class=model_cls
    )

    if isinstance(source, (str, os.PathLike)):
        backbone, preprocessor = _load_preset(os.fspath(source), with_tokenizer=tokenizer is None)
        if tokenizer is None:
            tokenizer = preprocessor
    else:
        backbone = source
    config = silc_config_from_keras_hub(backbone, **overrides)
    if isinstance(tokenizer, (keras_hub.tokenizers.Tokenizer, keras_hub.models.Preprocessor)):
        tokenizer = silc_tokenizer_from_keras_hub(tokenizer, config["text"]["max_length"])
    model = model_cls.from_config({**config, "tokenizer": tokenizer})
    load_keras_hub_weights(model, backbone)
    return model
