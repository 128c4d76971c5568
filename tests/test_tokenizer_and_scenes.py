"""The tokenizer (keras-hub vocabularies, saved with the model) and the Fashion-MNIST scenes."""

import importlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import to_numpy

import keras_silc
from keras_silc import data

# The module (the package exports a function of the same name).
scenes_module = importlib.import_module("keras_silc.data.fashion_scenes")


@pytest.fixture(scope="module")
def scenes():
    return data.fashion_scenes("train", 300, 64, num_captions=2, seed=0, cache_dir="")


@pytest.fixture(scope="module", params=["wordpiece", "unigram"])
def tokenizer(request, scenes):
    return data.SilcTokenizer.from_captions(
        list(scenes["caption"].ravel()), 200, 16, model_type=request.param
    )


# -------------------------------------------------------------------- tokenizer
def test_ids_are_padded_with_zero_after_the_end_token(tokenizer, scenes):
    ids = tokenizer(list(scenes["caption"][:8, 0]) + ["a red bag"])
    assert ids.dtype == np.int32 and ids.shape == (9, 16)
    end = tokenizer.end_token_id
    for row in ids:
        length = int(np.sum(row != 0))
        assert row[length - 1] == end and np.all(row[length:] == 0)
        assert np.all(row[: length - 1] != end) and np.all(row[: length - 1] != 0)
    # Long captions are truncated with the end token kept last.
    assert ids[0, -1] == end or np.sum(ids[0] != 0) < 16


def test_lowercase_detokenize_and_tf_data(tokenizer):
    np.testing.assert_array_equal(tokenizer("A RED Bag"), tokenizer("a red bag"))
    assert tokenizer.detokenize(tokenizer(["a red bag"]))[0].replace(" ", "") == "aredbag"
    in_graph = tf.data.Dataset.from_tensor_slices(["a red bag", "a blue coat"]).batch(2)
    in_graph = next(iter(in_graph.map(tokenizer))).numpy()
    np.testing.assert_array_equal(in_graph, tokenizer(["a red bag", "a blue coat"]))


def test_tokenizer_travels_with_the_saved_model(tokenizer, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_silc.SilcModel.from_preset("silc_tiny", tokenizer=tokenizer)
    captions = ["a red bag on the left", "a white dress at the top"]
    ids = model.tokenize(captions)
    embeddings = to_numpy(model.encode_text(ids))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded.tokenize(captions), ids)
    np.testing.assert_allclose(to_numpy(reloaded.encode_text(ids)), embeddings, atol=1e-6)
    tokenizer.save_to_directory(tmp_path / "preset")
    again = data.SilcTokenizer.from_directory(tmp_path / "preset")
    np.testing.assert_array_equal(again(captions), ids)


def test_vocabulary_files_and_errors(tokenizer, tmp_path):
    if isinstance(
        tokenizer.tokenizer, keras_silc.data.tokenizer.keras_hub.tokenizers.WordPieceTokenizer
    ):
        path = tmp_path / "vocab.txt"
        path.write_text("\n".join(tokenizer.tokenizer.get_vocabulary()))
    else:
        path = tmp_path / "spm.model"
        path.write_bytes(tokenizer.tokenizer.proto)
    loaded = data.SilcTokenizer.from_file(path, 16)
    np.testing.assert_array_equal(loaded(["a red bag"]), tokenizer(["a red bag"]))
    with pytest.raises(FileNotFoundError, match="No vocabulary file"):
        data.SilcTokenizer.from_file(tmp_path / "missing.model", 16)
    with pytest.raises(ValueError, match="text tower embeds 8"):
        keras_silc.SilcModel.from_preset(
            "silc_tiny", text={"vocabulary_size": 8}, tokenizer=tokenizer
        )
    with pytest.raises(ValueError, match="no tokenizer"):
        keras_silc.SilcModel.from_preset("silc_tiny").tokenize(["a bag"])


def test_a_vocabulary_whose_padding_is_not_zero_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(["[UNK]", "[PAD]", "[EOS]", "a", "bag"]))
    with pytest.raises(ValueError, match="padding token has id 1"):
        data.SilcTokenizer.from_file(path, 8)


# ----------------------------------------------------------------------- scenes
def test_scene_shapes_and_determinism(scenes):
    assert scenes["image"].shape == (300, 64, 64, 3) and scenes["image"].dtype == np.uint8
    assert scenes["mask"].shape == (300, 64, 64) and scenes["caption"].shape == (300, 2)
    again = data.fashion_scenes("train", 300, 64, num_captions=2, seed=0, cache_dir="")
    for key in scenes:
        np.testing.assert_array_equal(scenes[key], again[key])
    other = data.fashion_scenes("train", 20, 64, seed=1, cache_dir="")
    assert not np.array_equal(other["image"], scenes["image"][:20])


def test_masks_labels_and_captions_agree(scenes):
    classes = data.FASHION_CLASSES
    for mask, labels, captions in zip(
        scenes["mask"], scenes["labels"], scenes["caption"], strict=True
    ):
        present = set(np.unique(mask)) - {0}
        assert present == {c + 1 for c in np.flatnonzero(labels)}
        for caption in captions:
            named = {c for c in range(10) if re.search(rf"\b{re.escape(classes[c])}\b", caption)}
            # "shirt" is also inside "t-shirt": count only whole names.
            if "t-shirt" in caption and 6 in named and not re.search(r"(?<!t-)\bshirt\b", caption):
                named.discard(6)
            assert named == {c - 1 for c in present}, caption
    # Items are small and several classes share a canvas: segmentation is a real test.
    assert (scenes["mask"] > 0).mean() < 0.35
    assert scenes["labels"].sum(axis=1).mean() >= 2.5


def test_position_words_match_where_the_item_is(scenes):
    classes = data.FASHION_CLASSES
    rows = {"top": 0, "bottom": 2}
    checked = 0
    for mask, caption in zip(scenes["mask"][:60], scenes["caption"][:60, 0], strict=True):
        for c in np.unique(mask)[1:]:
            pattern = rf"\b(?:a|an) \w+ {re.escape(classes[c - 1])} (at the|on the|in the) ([a-z ]+?)(?:,| and|\.)"
            match = re.search(pattern, caption)
            assert match, caption
            words = match.group(2).split()
            ys, xs = np.nonzero(mask == c)
            row, col = int(3 * ys.mean() / 64), int(3 * xs.mean() / 64)
            expected_row = next((rows[w] for w in words if w in rows), 1)
            expected_col = 0 if "left" in words else 2 if "right" in words else 1
            assert (min(row, 2), min(col, 2)) == (expected_row, expected_col), caption
            checked += 1
    assert checked > 100


def test_train_and_test_scenes_use_their_own_split(monkeypatch):
    splits = []
    real = scenes_module.load_fashion_mnist

    def spy(split, data_dir=None):
        splits.append(split)
        return real(split, data_dir)

    monkeypatch.setattr(scenes_module, "load_fashion_mnist", spy)
    data.fashion_scenes("test", 4, 64, cache_dir="")
    scenes_module.fashion_items("test", 4, 64)
    assert splits == ["test", "test"]


def test_items_for_zero_shot_classification():
    items = data.fashion_items("test", num_items=None, image_size=32)
    _, labels = data.load_fashion_mnist("test")
    assert items["image"].shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(items["label"], labels)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_SILC_FASHION_MNIST", str(tmp_path))
    monkeypatch.setattr(scenes_module, "_DEBIAN_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(scenes_module.os.path, "expanduser", lambda p: str(tmp_path / "home"))

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    scenes_module.load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as error:
            scenes_module.load_fashion_mnist("train", str(tmp_path / "given"))
        assert str(tmp_path / "given") in str(error.value)
    finally:
        scenes_module.load_fashion_mnist.cache_clear()


def test_bad_scene_arguments():
    with pytest.raises(ValueError, match="split"):
        data.fashion_scenes("val", 2)
    with pytest.raises(ValueError, match="min_items"):
        data.fashion_scenes("train", 2, min_items=4, max_items=2)
    with pytest.raises(ValueError, match="at least 8 px"):
        data.fashion_scenes("train", 2, image_size=16)
