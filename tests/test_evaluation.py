"""The evaluations against known answers, the callback and the pictures, on every backend."""

import os

import keras
import numpy as np
import pytest
from conftest import tiny_model

from keras_silc import evaluation

WORDS = ["cat", "dog", "bird", "fish", "frog", "a", "photo", "of", "the", "background", "x", "y"]


def word_tokenizer(texts):
    """Each word to its index + 1 in WORDS (unknown: len + 1), padded with 0 to 8."""
    ids = np.zeros((len(texts), 8), np.int32)
    for row, text in enumerate(texts):
        for col, word in enumerate(text.replace(".", "").split()[:8]):
            ids[row, col] = WORDS.index(word) + 1 if word in WORDS else len(WORDS) + 1
    return ids


class OneHotModel:
    """Texts embed as the one-hot of their class word; images as the one-hot of their
    class, stored as a constant pixel value; dense features per pixel likewise."""

    vision_config = {"image_size": None}
    classes = ["cat", "dog", "bird", "fish", "frog"]

    def encode_text(self, ids):
        ids = np.asarray(ids)
        out = np.zeros((len(ids), 8), np.float32)
        for row, tokens in enumerate(ids):
            names = [WORDS[t - 1] for t in tokens if 0 < t <= len(WORDS)]
            hits = [self.classes.index(n) for n in names if n in self.classes]
            out[row, hits[0] if hits else 7] = 1.0
        return out

    def encode_image(self, images):
        label = np.rint(np.asarray(images)[:, 0, 0, 0] * 10).astype(int)
        return np.eye(8, dtype=np.float32)[label]

    def dense_image_features(self, images, source="map_values"):
        label = np.rint(np.asarray(images)[..., 0] * 10).astype(int)  # (N, H, W)
        return np.eye(8, dtype=np.float32)[label]


def images_of(labels, size=4):
    return (
        np.ones((len(labels), size, size, 3), np.float32)
        * (np.asarray(labels) / 10.0)[:, None, None, None]
    )


def test_zero_shot_is_exact_on_a_model_that_knows_the_answer():
    model, labels = OneHotModel(), np.array([0, 1, 2, 3, 4, 2])
    result = evaluation.zero_shot_classification(
        model, word_tokenizer, images_of(labels), labels, OneHotModel.classes
    )
    assert result == {"top1": 1.0, "top5": 1.0}
    # Swapping two class names makes exactly their images wrong at top-1.
    swapped = ["dog", "cat", "bird", "fish", "frog"]
    result = evaluation.zero_shot_classification(
        model, word_tokenizer, images_of(labels), labels, swapped
    )
    assert result["top1"] == pytest.approx(4 / 6) and result["top5"] == 1.0
    with pytest.raises(ValueError, match="labels must be in"):
        evaluation.zero_shot_classification(
            model, word_tokenizer, images_of([7]), [7], OneHotModel.classes
        )
    with pytest.raises(ValueError, match="No tokenizer"):
        evaluation.zero_shot_classification(model, None, images_of([0]), [0], ["cat"])


def test_prompts_are_averaged_after_normalising_and_renormalised():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(WORDS) + 2, 6)).astype(np.float32)

    class SumModel:
        vision_config = {}

        def encode_text(self, ids):
            return table[np.asarray(ids)].sum(axis=1) * (1 + np.arange(len(ids)))[:, None]

    templates = ("a {}.", "a photo of the {}.")
    got = evaluation.class_embeddings(SumModel(), word_tokenizer, ["cat", "dog"], templates)
    expected = []
    for name in ["cat", "dog"]:
        rows = [table[word_tokenizer([t.format(name)])[0]].sum(0) for t in templates]
        rows = [r / np.linalg.norm(r) for r in rows]
        mean = np.mean(rows, axis=0)
        expected.append(mean / np.linalg.norm(mean))
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5)


def test_retrieval_with_several_captions_per_image():
    similarity = np.array(
        [
            [0.9, 0.1, 0.8, 0.0],  # image 0: best caption 0 (its own)
            [0.7, 0.2, 0.1, 0.3],  # image 1: best caption 0 (image 0's) -> miss at 1
            [0.1, 0.3, 0.3, 0.9],  # image 2: best caption 3 (its own)
        ]
    )
    owner = np.array([0, 1, 0, 2])  # image 0 has captions 0 and 2
    result = evaluation.recall_at_k(similarity, owner, ks=(1, 2))
    assert result["i2t_recall@1"] == pytest.approx(2 / 3)
    assert result["i2t_recall@2"] == pytest.approx(2 / 3)  # image 1: captions 0, 3
    # Captions: 0 -> image 0 (hit), 1 -> image 2 (miss), 2 -> image 0 (hit), 3 -> image 2.
    assert result["t2i_recall@1"] == pytest.approx(3 / 4)
    model = OneHotModel()
    labels = np.array([0, 1, 2])
    captions = [["a cat", "the cat"], ["a dog"], ["a bird", "the bird"]]
    result = evaluation.retrieval(model, word_tokenizer, images_of(labels), captions)
    assert result["i2t_recall@1"] == 1.0 and result["t2i_recall@1"] == 1.0


def test_miou_against_a_hand_computed_confusion_matrix():
    truth = np.array([[0, 1, 1], [2, 2, 0]])
    prediction = np.array([[1, 1, 2], [2, 1, 0]])
    confusion = evaluation.confusion_matrix(truth, prediction, 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 1], [0, 1, 1]])
    iou = evaluation.iou_from_confusion(confusion)
    np.testing.assert_allclose(iou, [1 / 2, 1 / 4, 1 / 3])
    ignored = evaluation.confusion_matrix(truth, prediction, 3, ignore=0)
    np.testing.assert_array_equal(ignored, [[0, 0, 0], [0, 1, 1], [0, 1, 1]])


def test_zero_shot_segmentation_on_known_features():
    model = OneHotModel()
    masks = np.array([[[0, 1], [2, 1]], [[3, 3], [0, 2]]])
    # Pixel value = class index / 10; background pixels look like "fish" (class 3).
    images = np.repeat(np.where(masks > 0, masks - 1, 3)[..., None] / 10.0, 3, axis=-1)
    result = evaluation.zero_shot_segmentation(
        model, word_tokenizer, images, masks, OneHotModel.classes
    )
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0
    assert set(result) == {"miou", "pixel_accuracy", "iou/cat", "iou/dog", "iou/bird"}
    # With the background scored, the two background pixels predicted "fish" cost IoU.
    result = evaluation.zero_shot_segmentation(
        model, word_tokenizer, images, masks, OneHotModel.classes, background="include"
    )
    assert result["iou/background"] == 0.0 and result["pixel_accuracy"] == pytest.approx(6 / 8)
    np.testing.assert_allclose(result["miou"], (0 + 1 + 1 + 1 + 0) / 5)


def test_ridge_matches_a_direct_solve():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5))
    labels = rng.integers(0, 3, 30)
    weights, mean, std = evaluation.fit_ridge(features, labels, 3, l2_regularization=2.0)
    x = np.concatenate(
        [(features - features.mean(0)) / (features.std(0) + 1e-6), np.ones((30, 1))], 1
    )
    y = 2 * np.eye(3)[labels] - 1
    np.testing.assert_allclose(
        weights, np.linalg.solve(x.T @ x + 2.0 * np.eye(6), x.T @ y), rtol=1e-8
    )
    predictions = evaluation.predict_ridge(weights, mean, std, features)
    np.testing.assert_array_equal(predictions, np.argmax(x @ weights, 1))


def test_few_shot_is_exact_on_separable_features():
    model = OneHotModel()
    train = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    test = np.array([2, 1, 0, 0])
    result = evaluation.few_shot_classification(
        model,
        images_of(train),
        train,
        images_of(test),
        test,
        shots=(1, 3),
        seeds=2,
        l2_regularization=0.1,
    )
    assert result["1shot_mean"] == 1.0 and result["3shot_std"] == 0.0
    with pytest.raises(ValueError, match="4-shot needs 4"):
        evaluation.few_shot_classification(
            model, images_of(train), train, images_of(test), test, shots=(4,)
        )


def test_every_evaluation_runs_on_a_real_model(tmp_path):
    model = tiny_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8)  # resized to 32
    labels = np.arange(12) % 3
    names = ["cat", "dog", "bird"]
    masks = rng.integers(0, 4, (12, 40, 40))
    results = {}
    results.update(
        evaluation.zero_shot_classification(model, word_tokenizer, images, labels, names)
    )
    results.update(
        evaluation.few_shot_classification(
            model, images, labels, images, labels, shots=(2,), seeds=2
        )
    )
    results.update(
        evaluation.retrieval(model, word_tokenizer, images, [f"a {names[i]}" for i in labels])
    )
    results.update(evaluation.zero_shot_segmentation(model, word_tokenizer, images, masks, names))
    for key, value in results.items():
        assert np.isfinite(value) and 0.0 <= value <= 1.0, key
    predictions = evaluation.segment(model, word_tokenizer, images[:3], names)
    assert predictions.shape == (3, 40, 40) and predictions.min() >= 1
    path = evaluation.plot_segmentation(
        images[:3], predictions, masks[:3], names, str(tmp_path / "seg.png")
    )
    assert os.path.getsize(path) > 1000


def test_callback_writes_history_and_tensorboard(tmp_path):
    model = tiny_model()
    model.compile()
    batch = model.example_batch(4)
    callback = evaluation.EvaluationCallback(
        {"probe": lambda m: {"norm": float(np.linalg.norm(keras.ops.convert_to_numpy(m.center)))}},
        log_dir=str(tmp_path / "tb"),
    )
    history = model.fit(batch, batch_size=4, epochs=2, verbose=0, callbacks=[callback]).history
    assert len(history["probe/norm"]) == 2 and history["probe/norm"][1] > 0
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    path = evaluation.plot_metrics(history, str(tmp_path / "curves.png"))
    assert os.path.getsize(path) > 1000
