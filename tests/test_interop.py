"""Pretrained SigLIP / CLIP weights in, image features out.

Parity is checked against the peer libraries themselves: tiny randomly initialised
keras-hub backbones and Hugging Face models (no downloads) on the same inputs.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

from keras_silc import ImageFeatureExtractor
from keras_silc import SilcModel
from keras_silc.interop.common import local_crop_size
from keras_silc.layers.transformer import ACTIVATIONS
from keras_silc.models.vision_encoder import VisionEncoder

keras_hub = pytest.importorskip("keras_hub")

HEAD = {"num_prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16}
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
TOWER = {"num_layers": 2, "num_heads": 4, "hidden_dim": 32, "intermediate_dim": 64}


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def _perturb(weights, seed=0):
    """Random biases and LayerNorm offsets: at initialisation they are zero, and a
    mapping that dropped or swapped them would still pass."""
    rng = np.random.default_rng(seed)
    for w in weights:
        name = w.path.split("/")[-1]
        if name in ("bias", "beta", "gamma", "logit_scale", "logit_bias"):
            base = 1.0 if name == "gamma" else 0.0
            w.assign((base + 0.2 * rng.standard_normal(w.shape)).astype(np.float32))


def _siglip_backbone():
    keras.utils.set_random_seed(1)
    vision = keras_hub.models.SigLIPVisionEncoder(patch_size=8, image_shape=(32, 32, 3), **TOWER)
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=100, embedding_dim=32, max_sequence_length=16, **TOWER
    )
    backbone = keras_hub.models.SigLIPBackbone(vision, text)
    _perturb(backbone.weights)
    return backbone


def _clip_backbone(vocabulary_size=100):
    keras.utils.set_random_seed(2)
    vision = keras_hub.models.CLIPVisionEncoder(patch_size=8, image_shape=(32, 32, 3), **TOWER)
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=vocabulary_size, embedding_dim=32, max_sequence_length=16, **TOWER
    )
    backbone = keras_hub.models.CLIPBackbone(vision, text, projection_dim=24)
    # As a loaded preset has them (a fresh keras-hub CLIP leaves the ids at zero).
    ids = vision.embedding.position_ids
    ids.assign(np.arange(ids.shape[1])[None].astype(keras.backend.standardize_dtype(ids.dtype)))
    _perturb(backbone.weights)
    return backbone


def _token_ids(end_token=None, seed=0):
    ids = np.random.default_rng(seed).integers(1, 98, (3, 16)).astype(np.int32)
    if end_token is not None:
        ids[0, 5:], ids[1, 11:], ids[2, 15:] = end_token, end_token, end_token
    return ids


def _assert_close(ours, theirs):
    ours, theirs = to_numpy(ours), to_numpy(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=2e-5 * np.abs(theirs).max())


def _assert_teacher_is_student(model):
    for t, s in zip(model.teacher.weights, model.student.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(t), to_numpy(s))


def test_keras_hub_siglip_gives_the_same_embeddings():
    backbone = _siglip_backbone()
    model = SilcModel.from_keras_hub(backbone, head=HEAD)
    images, ids = _images(), _token_ids()
    _assert_close(model.student.encoder(images), backbone.get_vision_embeddings(images * 2 - 1))
    _assert_close(model.text_encoder(ids), backbone.get_text_embeddings(ids))
    head = backbone.siglip_head
    np.testing.assert_allclose(to_numpy(model.log_logit_scale), to_numpy(head.logit_scale))
    np.testing.assert_allclose(to_numpy(model.logit_bias), to_numpy(head.logit_bias))
    assert model.contrastive_loss == "siglip" and model.vision_config["pooling"] == "map"
    # 32 px images: local crops of 16, below the image as the paper's 96 are below its 256.
    assert model.preprocessor.local_crop_size == 16 and model.head_config["num_prototypes"] == 64
    sizes = [(16, 224), (14, 224), (16, 384), (8, 32), (8, 16)]  # (patch, image) -> local crop
    assert [local_crop_size(*size) for size in sizes] == [96, 98, 96, 16, 8]
    _assert_teacher_is_student(model)


def test_keras_hub_clip_gives_the_same_embeddings():
    backbone = _clip_backbone()
    model = SilcModel.from_keras_hub(backbone, head=HEAD)
    images, ids = _images(), _token_ids(end_token=99)
    normalized = (images - OPENAI_MEAN) / OPENAI_STD
    _assert_close(model.student.encoder(images), backbone.get_vision_embeddings(normalized))
    _assert_close(model.text_encoder(ids), backbone.get_text_embeddings(ids))
    np.testing.assert_allclose(
        to_numpy(model.log_logit_scale), to_numpy(backbone.clip_head.logit_scale)
    )
    assert model.contrastive_loss == "clip" and model.text_config["pooling"] == "argmax"
    _assert_teacher_is_student(model)


def _hf_model(family, tmp_path, vocabulary_size=100):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    text = {
        "vocab_size": vocabulary_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
    }
    vision = {key: text[key] for key in list(text)[1:5]}
    vision.update(image_size=32, patch_size=8)
    if family == "siglip":
        config = transformers.SiglipConfig(text_config=text, vision_config=vision)
        model = transformers.SiglipModel(config)
    else:
        text.update(
            bos_token_id=vocabulary_size - 2, eos_token_id=vocabulary_size - 1, pad_token_id=0
        )
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
        model = transformers.CLIPModel(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "logit" in name or "norm" in name:
                parameter.add_(0.2 * torch.randn_like(parameter))
    model.eval().save_pretrained(str(tmp_path))
    return model


def _hf_features(output):
    # transformers 5 returns an output object; older versions a tensor.
    return getattr(output, "pooler_output", output).detach().numpy()


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_huggingface_checkpoint_gives_the_same_embeddings(family, tmp_path):
    import torch

    hf = _hf_model(family, tmp_path)
    model = SilcModel.from_huggingface(str(tmp_path), head=HEAD)
    images = _images()
    ids = _token_ids(end_token=99 if family == "clip" else None)
    mean, std = (0.5, 0.5) if family == "siglip" else (OPENAI_MEAN, OPENAI_STD)
    pixels = torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        image_features = _hf_features(hf.get_image_features(pixel_values=pixels))
        text_features = _hf_features(hf.get_text_features(input_ids=torch.from_numpy(ids)))
    _assert_close(model.student.encoder(images), image_features)
    _assert_close(model.text_encoder(ids), text_features)
    np.testing.assert_allclose(to_numpy(model.log_logit_scale), hf.logit_scale.item(), rtol=1e-6)
    _assert_teacher_is_student(model)


def _siglip_vocabulary(path, captions):
    """A SentencePiece model laid out as SigLIP's: <pad> 0, </s> 1, <unk> 2."""
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_prefix=str(path),
        vocab_size=50,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    return f"{path}.model"


def test_a_converted_siglip_fine_tunes_with_its_own_tokenization(tmp_path):
    from keras_silc import data

    scenes = data.fashion_scenes("train", 16, 64, seed=0)
    captions = [str(caption) for caption in scenes["caption"]]
    vocabulary = _siglip_vocabulary(tmp_path / "spm", captions * 4)
    tokenizer = data.SilcTokenizer.from_file(
        vocabulary, 16, lowercase=False, pad_with_end_token=True
    )
    # The reference: keras-hub's SigLIP preprocessing of the same vocabulary.
    with open(vocabulary, "rb") as f:
        theirs = keras_hub.models.SigLIPPreprocessor(
            keras_hub.models.SigLIPTokenizer(proto=f.read()),
            sequence_length=16,
            canonicalize_text=False,
        )
    expected = theirs({"images": np.zeros((2, 1)), "prompts": captions[:2]})["token_ids"]
    ids = tokenizer(captions[:2])
    np.testing.assert_array_equal(ids, to_numpy(expected))
    assert ids[0, -1] == ids[1, -1] == tokenizer.pad_token_id == tokenizer.end_token_id == 1
    import tensorflow as tf  # the tf.data path pads the same way

    traced = tf.function(lambda texts: tokenizer(texts))(tf.constant(captions[:2]))
    np.testing.assert_array_equal(traced.numpy(), ids)

    model = SilcModel.from_keras_hub(
        _siglip_backbone(), head=HEAD, tokenizer=tokenizer, num_local_crops=2, local_crop_size=16
    )
    pairs = data.from_arrays(scenes["image"], scenes["caption"])
    dataset = data.training_dataset(pairs, model.preprocessor, 4, seed=0)
    model.compile(learning_rate=1e-4, warmup_steps=0, total_steps=2, cooldown_steps=0)
    history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and "distillation_loss" in history
    path = str(tmp_path / "converted.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.preprocessor.tokenize(captions[:2]), ids)
    images = scenes["image"][:2].astype(np.float32)[:, ::2, ::2] / 255.0
    _assert_close(reloaded.encode_image(images), model.encode_image(images))


# ------------------------------------------------ keras-hub presets with their tokenizers
PRESET_CAPTIONS = [
    "A red Bag, on the LEFT!",
    "two shoes   at the top-right.",
    "a dress",
    "the boot's heel (black) and a blue hat on the right of a green coat in the middle",
]


def _clip_vocabulary(words):
    """A byte-level BPE vocabulary laid out as CLIP's: the 256 byte symbols, each also with
    the end-of-word marker, merges that spell `words`, then <|startoftext|> and
    <|endoftext|> last (CLIP pools at the largest id)."""
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    symbols = bytes_to_unicode()[1]
    vocabulary, merges = symbols + [symbol + "</w>" for symbol in symbols], []
    for word in words:
        merged = word[0]
        for i, char in enumerate(word[1:]):
            piece = char + ("</w>" if i == len(word) - 2 else "")
            if f"{merged} {piece}" not in merges:
                merges.append(f"{merged} {piece}")
            merged += piece
            if merged not in vocabulary:
                vocabulary.append(merged)
    vocabulary += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocabulary)}, merges


def _keras_hub_preset(family, path):
    """A tiny keras-hub preset folder written by keras-hub's own save_to_preset."""
    if family == "siglip":
        import io

        import sentencepiece

        proto = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(PRESET_CAPTIONS * 20),
            model_writer=proto,
            vocab_size=60,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )  # SigLIP's layout: <pad> 0, </s> 1, <unk> 2
        tokenizer = keras_hub.models.SigLIPTokenizer(proto=proto.getvalue())
        backbone = _siglip_backbone()
        preprocessor = keras_hub.models.SigLIPPreprocessor(tokenizer, sequence_length=16)
    else:
        vocabulary, merges = _clip_vocabulary(["red", "bag", "the", "left", "shoes", "right"])
        tokenizer = keras_hub.models.CLIPTokenizer(vocabulary=vocabulary, merges=merges)
        backbone = _clip_backbone(tokenizer.vocabulary_size())
        preprocessor = keras_hub.models.CLIPPreprocessor(tokenizer, sequence_length=16)
    backbone.save_to_preset(str(path))
    preprocessor.save_to_preset(str(path))
    return str(path)


def _normalized(x):
    x = to_numpy(x)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_a_keras_hub_preset_folder_brings_its_weights_and_tokenizer(family, tmp_path):
    import tensorflow as tf

    preset = _keras_hub_preset(family, tmp_path / family)
    model = SilcModel.from_keras_hub(preset, head=HEAD)
    # keras-hub's own model and preprocessor, loaded from the same folder.
    backbone = keras_hub.models.Backbone.from_preset(preset)
    hub_preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(preset)
    theirs = to_numpy(hub_preprocessor({"images": None, "prompts": PRESET_CAPTIONS})["token_ids"])
    ids = model.preprocessor.tokenize(PRESET_CAPTIONS)
    np.testing.assert_array_equal(ids, theirs)
    # The tf.data path, as training_dataset runs it (keras-hub's own tf path agrees with
    # its eager one; tracing CLIP's takes seconds, so it is not traced here twice).
    traced = tf.data.Dataset.from_tensor_slices(PRESET_CAPTIONS).batch(4).map(model.tokenizer)
    np.testing.assert_array_equal(next(iter(traced)).numpy(), theirs)
    if family == "siglip":  # canonicalised, padded with the end token "</s>" (id 1)
        assert model.tokenizer.canonicalize_text and ids[2, -1] == 1
    else:  # <|startoftext|> ... <|endoftext|>, then zeros
        assert ids[0, 0] == model.tokenizer.start_token_id == model.text_encoder.vocabulary_size - 2

    images = _images()
    mean, std = (0.5, 0.5) if family == "siglip" else (OPENAI_MEAN, OPENAI_STD)
    hub_image = backbone.get_vision_embeddings((images - mean) / std)
    np.testing.assert_allclose(
        to_numpy(model.encode_image(images)), _normalized(hub_image), atol=1e-5
    )
    hub_text = backbone.get_text_embeddings(theirs)
    np.testing.assert_allclose(to_numpy(model.encode_text(ids)), _normalized(hub_text), atol=1e-5)

    # The tokenizer (and its vocabulary files) travel with the saved model.
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.testing.assert_array_equal(
        keras.models.load_model(path).preprocessor.tokenize(PRESET_CAPTIONS), ids
    )


def _huggingface_tokenizer(family, folder):
    """Writes the family's tokenizer files into a Hugging Face folder, as the Hub's
    repositories hold them (CLIP's merges.txt with its "#version" line); returns
    transformers' own tokenizer of the folder, the reference."""
    import json

    transformers = pytest.importorskip("transformers")
    if family == "siglip":
        import sentencepiece

        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(PRESET_CAPTIONS * 20),
            model_prefix=os.path.join(folder, "spiece"),
            vocab_size=60,
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return transformers.SiglipTokenizer(vocab_file=os.path.join(folder, "spiece.model"))
    vocabulary, merges = _clip_vocabulary(["red", "bag", "the", "left", "shoes", "right"])
    with open(os.path.join(folder, "vocab.json"), "w") as handle:
        json.dump(vocabulary, handle)
    with open(os.path.join(folder, "merges.txt"), "w") as handle:
        handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return transformers.CLIPTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_a_huggingface_folder_brings_its_own_tokenizer(family, tmp_path):
    # CLIP's byte-level vocabulary has 531 tokens, <|endoftext|> the last.
    _hf_model(family, tmp_path, 100 if family == "siglip" else 531)
    theirs = _huggingface_tokenizer(family, str(tmp_path))
    model = SilcModel.from_huggingface(str(tmp_path), head=HEAD)
    ids = model.preprocessor.tokenize(PRESET_CAPTIONS)
    expected = np.asarray(
        theirs(PRESET_CAPTIONS, padding="max_length", max_length=16, truncation=True)["input_ids"]
    )
    end = model.tokenizer.end_token_id
    if family == "clip":  # transformers pads CLIP with its end token, keras-hub with 0
        after_end = np.cumsum(expected == end, axis=1) - (expected == end) > 0
        assert np.all(ids[after_end] == 0) and after_end.any()
        expected = np.where(after_end, 0, expected)
    np.testing.assert_array_equal(ids, expected)
    assert np.all(np.any(ids == end, axis=1))  # every caption ends, truncated or not


def test_keras_hub_preset_errors_name_the_file_or_handle(tmp_path):
    with pytest.raises(
        ValueError, match="(?s)Could not load the keras-hub preset 'siglip'.*network"
    ):
        SilcModel.from_keras_hub("siglip")
    with pytest.raises(FileNotFoundError, match="No keras-hub preset folder at"):
        SilcModel.from_keras_hub(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        SilcModel.from_keras_hub(str(tmp_path))
    preset = _keras_hub_preset("siglip", tmp_path / "siglip")
    os.remove(os.path.join(preset, "assets", "tokenizer", "vocabulary.spm"))
    with pytest.raises(FileNotFoundError, match="vocabulary.spm"):
        SilcModel.from_keras_hub(preset)
    os.remove(os.path.join(preset, "tokenizer.json"))
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        SilcModel.from_keras_hub(preset)
    # A config.json of one block fewer than model.weights.h5 (keras-hub loads it silently).
    preset = _keras_hub_preset("clip", tmp_path / "clip")
    with open(os.path.join(preset, "config.json")) as handle:
        text = handle.read()
    with open(os.path.join(preset, "config.json"), "w") as handle:
        handle.write(text.replace('"num_layers": 2', '"num_layers": 1', 1))
    with pytest.raises(ValueError, match=r"model.weights.h5 does not fit its config.json \(the"):
        SilcModel.from_keras_hub(preset)
    with pytest.raises(TypeError, match="must be a keras_silc SilcTokenizer, or a keras-hub"):
        SilcModel.from_keras_hub(_siglip_backbone(), tokenizer=keras_hub.tokenizers.ByteTokenizer())


def test_conversion_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="SigLIPBackbone and CLIPBackbone .or a preset"):
        SilcModel.from_keras_hub(3)
    with pytest.raises(ValueError, match=r"fc1 kernel' with shape \(32, 64\) into '.*fc1/kernel'"):
        SilcModel.from_keras_hub(_siglip_backbone(), head=HEAD, vision={"mlp_dim": 48})
    with pytest.raises(FileNotFoundError, match="No config.json"):
        SilcModel.from_huggingface(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="describes a 'bert' model"):
        SilcModel.from_huggingface(str(tmp_path))


def test_tower_options_follow_their_formulas():
    x = np.linspace(-4, 4, 17, dtype=np.float32)
    np.testing.assert_allclose(
        to_numpy(ACTIVATIONS["quick_gelu"](keras.ops.convert_to_tensor(x))),
        x / (1 + np.exp(-1.702 * x)),
        rtol=1e-5,
    )
    tanh_gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(
        to_numpy(ACTIVATIONS["gelu_approximate"](keras.ops.convert_to_tensor(x))),
        tanh_gelu,
        rtol=1e-5,
        atol=1e-6,
    )
    encoder = VisionEncoder(
        image_size=16, patch_size=8, width=8, depth=1, num_heads=2, pooling="gap",
        pixel_mean=(0.1, 0.2, 0.3), pixel_std=(0.5, 0.25, 2.0),
    )  # fmt: skip
    encoder.build()
    images = _images(2, 16)
    np.testing.assert_allclose(
        to_numpy(encoder.normalize_pixels(images)),
        (images - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 2.0]),
        rtol=1e-5,
        atol=1e-6,
    )
    tokens = to_numpy(encoder.tokens(images))
    _assert_close(encoder(images), tokens.mean(axis=1))
    assert tuple(encoder.dense_features(images).shape) == (2, 2, 2, 8)
    with pytest.raises(ValueError, match="needs a MAP head"):
        encoder.dense_features(images, source="map_values")
    with pytest.raises(ValueError, match="class_token=True"):
        VisionEncoder(image_size=16, patch_size=8, pooling="cls")


def test_image_feature_extractor_saves_reloads_and_exports(tmp_path):
    model = SilcModel.from_keras_hub(_clip_backbone(), head=HEAD, inference_tower="teacher")
    extractor = model.image_feature_extractor()
    images = _images()
    features = extractor(images)
    _assert_close(features["pooled"], model.encode_image(images))
    _assert_close(features["dense"], model.dense_image_features(images))
    assert tuple(features["dense"].shape) == (3, 4, 4, 24)

    extractor.save(str(tmp_path / "features.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "features.keras"))
    _assert_close(reloaded(images)["dense"], features["dense"])
    extractor.save_to_preset(str(tmp_path / "preset"))
    from_preset = ImageFeatureExtractor.from_preset(str(tmp_path / "preset"))
    _assert_close(from_preset(images)["pooled"], features["pooled"])
    with pytest.raises(FileNotFoundError, match="has no config.json.*save_to_preset"):
        ImageFeatureExtractor.from_preset(str(tmp_path))

    serving = str(tmp_path / "serving")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "dense.npy", to_numpy(features["dense"]))
    if BACKEND == "torch":
        with pytest.raises(RuntimeError, match="torch_xla"):
            extractor.export(serving)
        # The documented route: export the saved preset under another backend.
        script = (
            "import sys; from keras_silc import ImageFeatureExtractor as E; "
            "E.from_preset(sys.argv[1]).export(sys.argv[2])"
        )
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "preset"), serving], check=True, env=env
        )
    else:
        extractor.export(serving)
    check = (
        "import sys, numpy as np, tensorflow as tf; d = sys.argv[1]; "
        "served = tf.saved_model.load(d + '/serving'); out = served.serve(np.load(d + '/images.npy')); "
        "np.testing.assert_allclose(out['dense'].numpy(), np.load(d + '/dense.npy'), atol=1e-5)"
    )
    subprocess.run([sys.executable, "-c", check, str(tmp_path)], check=True)


# --------------------------------------------------------------- bad sources, clear errors
def test_an_offline_keras_hub_preset_name_asks_for_a_local_folder(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")
    import requests

    from keras_silc.experiments import pretrained

    def offline(handle, path=None, **kwargs):  # as requests fails without a network
        raise requests.ConnectionError(
            "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded"
        )

    monkeypatch.setattr(kagglehub, "model_download", offline)
    message = (
        r"(?s)needs network access to download 'siglip_base_patch16_224' from Kaggle.*"
        r"Offline, pass a local preset folder.*save_to_preset\(folder\)"
    )
    with pytest.raises(ValueError, match=message):
        SilcModel.from_keras_hub("siglip_base_patch16_224")
    # What `keras-silc train --init-from siglip_base_patch16_224` prints.
    with pytest.raises(ValueError, match=r"^--init-from 'siglip_base_patch16_224': from_keras"):
        pretrained.load(pretrained.describe("siglip_base_patch16_224"))


def test_a_keras_silc_preset_given_to_a_converter_points_to_from_preset(tmp_path):
    import re

    folder = str(tmp_path / "silc")
    SilcModel.from_preset("silc_tiny").save_to_preset(folder)
    for convert in (SilcModel.from_keras_hub, SilcModel.from_huggingface):
        for source in ("silc_tiny", folder):
            with pytest.raises(
                ValueError,
                match=r"is a keras_silc preset \(a SilcModel\).*SilcModel.from_preset\("
                + re.escape(repr(source)),
            ):
                convert(source)


def test_a_folder_of_the_other_library_points_to_its_converter(tmp_path):
    hub = _keras_hub_preset("siglip", tmp_path / "hub")
    with pytest.raises(ValueError, match=r"keras-hub preset folder .*SilcModel.from_keras_hub\("):
        SilcModel.from_huggingface(hub)
    _hf_model("clip", tmp_path / "hf")
    with pytest.raises(ValueError, match=r"Hugging Face checkpoint folder .*from_huggingface\("):
        SilcModel.from_keras_hub(str(tmp_path / "hf"))


def _damaged_copy(folder, copy, damage):
    """A copy of the checkpoint `folder` at `copy`, with `damage(copy)` done to it."""
    import shutil

    shutil.copytree(folder, copy)
    damage(copy)
    return str(copy)


def _edit_json(path, edit):
    import json

    with open(path) as handle:
        data = json.load(handle)
    edit(data)
    with open(path, "w") as handle:
        json.dump(data, handle)


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_a_damaged_huggingface_folder_is_refused_naming_the_file(family, tmp_path):
    good = tmp_path / "good"
    _hf_model(family, good, 100 if family == "siglip" else 531)
    _huggingface_tokenizer(family, str(good))

    def refused(damage, error, match):
        copy = _damaged_copy(good, tmp_path / f"damaged{len(os.listdir(tmp_path))}", damage)
        with pytest.raises(error, match=match):
            SilcModel.from_huggingface(copy, head=HEAD)

    def cut(name, size=40):
        return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:size])

    refused(cut("config.json"), ValueError, r"config.json is not valid JSON \(")
    (good / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std"')
    refused(lambda _: None, ValueError, r"preprocessor_config.json is not valid JSON")
    os.remove(good / "preprocessor_config.json")
    refused(
        lambda folder: _edit_json(folder / "config.json", lambda c: c.pop("vision_config")),
        ValueError,
        r"config.json has no 'vision_config': it is not a complete",
    )
    # A left-out size is transformers' default, which these weights do not fit.
    refused(
        lambda folder: _edit_json(
            folder / "config.json", lambda c: c["text_config"].pop("hidden_size")
        ),
        ValueError,
        r"Cannot load Hugging Face weight .* configurations disagree",
    )
    if family == "siglip":
        refused(
            lambda folder: (folder / "spiece.model").write_bytes(b"not a sentencepiece model"),
            ValueError,
            r"tokenizer of .*spiece.model \(.*\): the file is damaged",
        )
    else:
        refused(
            lambda folder: (folder / "vocab.json").write_text('{"a": 0, '),
            ValueError,
            r"vocab.json is not valid JSON",
        )
        refused(
            lambda folder: (folder / "merges.txt").write_bytes(b"\xff\xfe not text"),
            ValueError,
            r"merges.txt is not UTF-8 text",
        )
        # Half a tokenizer: the model would otherwise come without one.
        refused(
            lambda folder: os.remove(folder / "merges.txt"),
            FileNotFoundError,
            r"has vocab.json but no merges.txt",
        )
    refused(
        cut("model.safetensors", 5000),
        ValueError,
        r"model.safetensors is not a readable safetensors file \(.*\): it is truncated",
    )


def test_huggingface_pixel_statistics_and_folder_arguments_are_checked(tmp_path):
    import json

    from keras_silc.interop import silc_config_from_huggingface

    _hf_model("siglip", tmp_path)
    statistics = tmp_path / "preprocessor_config.json"
    # One number stands for the three channels, as transformers reads it.
    statistics.write_text(json.dumps({"image_mean": 0.25, "image_std": 0.5}))
    vision = silc_config_from_huggingface(str(tmp_path), head=HEAD)["vision"]
    assert tuple(vision["pixel_mean"]) == (0.25,) * 3 and tuple(vision["pixel_std"]) == (0.5,) * 3
    statistics.write_text(json.dumps({"image_mean": [0.5, 0.5], "image_std": 0.5}))
    with pytest.raises(ValueError, match=r"preprocessor_config.json: image_mean is \[0.5, 0.5\]"):
        silc_config_from_huggingface(str(tmp_path))
    with pytest.raises(TypeError, match="takes the path of a local checkpoint folder.*NoneType"):
        SilcModel.from_huggingface(None)
    with pytest.raises(FileNotFoundError, match="No folder at .*huggingface-cli download"):
        SilcModel.from_huggingface(str(tmp_path / "missing"))


@pytest.mark.backend_independent
def test_left_out_tower_settings_are_transformers_defaults(tmp_path):
    """save_pretrained writes only the values that differ from the config classes' defaults,
    so published config.json files leave them out; the converter fills in the same ones."""
    import json

    transformers = pytest.importorskip("transformers")
    from keras_silc.interop import huggingface
    from keras_silc.interop import silc_config_from_huggingface

    classes = {
        ("siglip", "vision_config"): transformers.SiglipVisionConfig,
        ("siglip", "text_config"): transformers.SiglipTextConfig,
        ("clip", "vision_config"): transformers.CLIPVisionConfig,
        ("clip", "text_config"): transformers.CLIPTextConfig,
    }
    for (family, section), config_class in classes.items():
        theirs = config_class().to_dict()
        ours = huggingface.TOWER_DEFAULTS[family][section]
        assert ours == {key: theirs[key] for key in ours}, (family, section)
    _hf_model("siglip", tmp_path)
    full = silc_config_from_huggingface(str(tmp_path), head=HEAD)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    for section in ("vision_config", "text_config"):
        for key in ("hidden_act", "layer_norm_eps", "image_size"):
            config[section].pop(key, None)
    config["vision_config"]["image_size"] = 32  # not the default: kept
    path.write_text(json.dumps(config))
    assert silc_config_from_huggingface(str(tmp_path), head=HEAD) == full
