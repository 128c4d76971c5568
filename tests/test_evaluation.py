"""The evaluations against known answers, the callback and the pictures, on every backend."""

import functools
import os

import keras
import numpy as np
import pytest
from conftest import tiny_model

from keras_silc import evaluation

WORDS = ["cat", "dog", "bird", "fish", "frog", "a", "photo", "of", "the", "background", "x", "y"]
CLASSES = ["cat", "dog", "bird", "fish", "frog"]


def word_tokenizer(texts):
    """Each word to its index + 1 in WORDS (unknown: len + 1), padded with 0 to 8."""
    ids = np.zeros((len(texts), 8), np.int32)
    for row, text in enumerate(texts):
        for col, word in enumerate(text.replace(".", "").split()[:8]):
            ids[row, col] = WORDS.index(word) + 1 if word in WORDS else len(WORDS) + 1
    return ids


class OneHotModel:
    """A model that knows the answers. A text embeds as the one-hot of its first class word
    (index 7 without one); an image as the one-hot of the class index stored in its pixels
    (value = class / 10), per pixel for the dense features. Outputs are backend tensors."""

    vision_config = {"image_size": None}

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def encode_text(self, ids):
        out = np.zeros((len(ids), 8), np.float32)
        for row, tokens in enumerate(np.asarray(ids)):
            names = [WORDS[t - 1] for t in tokens if 0 < t <= len(WORDS)]
            hits = [CLASSES.index(n) for n in names if n in CLASSES]
            out[row, hits[0] if hits else 7] = 1.0
        return keras.ops.convert_to_tensor(out)

    def encode_image(self, images):
        label = np.rint(np.asarray(images)[:, 0, 0, 0] * 10).astype(int)
        return keras.ops.convert_to_tensor(np.eye(8, dtype=np.float32)[label])

    def dense_image_features(self, images, source="map_values"):
        label = np.rint(np.asarray(images)[..., 0] * 10).astype(int)  # (N, H, W)
        return keras.ops.convert_to_tensor(np.eye(8, dtype=np.float32)[label])


def images_of(labels, size=4):
    labels = np.asarray(labels, np.float32)
    return np.ones((len(labels), size, size, 3), np.float32) * (labels / 10)[:, None, None, None]


@pytest.fixture(scope="module")
def real_model():
    """One tiny SilcModel for the module (building one is the slow part)."""
    return tiny_model()


# ----------------------------------------------------------------------- zero-shot
def test_zero_shot_is_exact_on_a_model_that_knows_the_answer():
    model, labels = OneHotModel(), np.array([0, 1, 2, 3, 4, 2])
    result = evaluation.zero_shot_classification(
        model, word_tokenizer, images_of(labels), labels, CLASSES
    )
    assert result == {"top1": 1.0, "top5": 1.0}
    # Swapping two class names makes exactly their images wrong at top-1.
    swapped = ["dog", "cat", "bird", "fish", "frog"]
    result = evaluation.zero_shot_classification(
        model, word_tokenizer, images_of(labels), labels, swapped
    )
    assert result["top1"] == pytest.approx(4 / 6) and result["top5"] == 1.0
    # Half the images wrong; top-5 is not reported for 3 classes; ties count as misses.
    labels = np.array([0, 1, 2, 2])
    result = evaluation.zero_shot_classification(
        model, word_tokenizer, images_of([0, 1, 3, 4]), labels, ["cat", "dog", "bird"]
    )
    assert result == {"top1": 0.5}
    # The model's own tokenizer when none is given.
    result = evaluation.zero_shot_classification(
        OneHotModel(word_tokenizer), None, images_of(labels), labels, ["cat", "dog", "bird"]
    )
    assert result == {"top1": 1.0}


def test_zero_shot_warns_about_repeated_class_names():
    """Two classes of one name tie on every image: the warning names them and the score
    counts their images as wrong."""
    model, labels = OneHotModel(), np.array([0, 1, 2, 3])
    with pytest.warns(UserWarning, match=r"repeats 'cat' at 0 and 2: classes of the same"):
        result = evaluation.zero_shot_classification(
            model, word_tokenizer, images_of([0, 1, 0, 3]), labels, ["cat", "dog", "cat", "fish"]
        )
    assert result == {"top1": 0.5}


def test_zero_shot_reads_datasets_and_iterables():
    import tensorflow as tf

    model, labels = OneHotModel(), np.array([0, 1, 2, 3, 4, 2, 1])
    images = images_of(labels)
    expected = evaluation.zero_shot_classification(
        model, word_tokenizer, images, labels, ["dog", "cat", "bird", "fish", "frog"]
    )
    data = {"image": images, "label": labels}
    sources = [
        data,
        tf.data.Dataset.from_tensor_slices(data).batch(3),
        tf.data.Dataset.from_tensor_slices(data),  # single examples
        [{"image": images[:4], "label": labels[:4]}, {"image": images[4:], "label": labels[4:]}],
    ]
    for source in sources:
        result = evaluation.zero_shot_classification(
            model,
            word_tokenizer,
            source,
            class_names=["dog", "cat", "bird", "fish", "frog"],
            batch_size=2,
        )
        assert result == expected


def test_prompts_are_averaged_after_normalising_and_renormalised():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(WORDS) + 2, 6)).astype(np.float32)

    class SumModel:
        def encode_text(self, ids):  # deliberately not normalised, different norms per row
            return table[np.asarray(ids)].sum(axis=1) * (1 + np.arange(len(ids)))[:, None]

    templates = ("a {}.", "a photo of the {}.", "{}")
    got = evaluation.class_embeddings(
        SumModel(), word_tokenizer, ["cat", "dog"], templates, batch_size=4
    )
    expected = []
    for name in ["cat", "dog"]:
        rows = [table[word_tokenizer([t.format(name)])[0]].sum(0) for t in templates]
        rows = [r / np.linalg.norm(r) for r in rows]
        mean = np.mean(rows, axis=0)
        expected.append(mean / np.linalg.norm(mean))
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="has no"):
        evaluation.class_embeddings(SumModel(), word_tokenizer, ["cat"], ["a photo"])


# ----------------------------------------------------------------------- retrieval
def test_recall_at_k_with_several_captions_per_image():
    similarity = np.array(
        [
            [0.9, 0.1, 0.8, 0.0],  # image 0: best caption 0 (its own)
            [0.7, 0.2, 0.1, 0.3],  # image 1: captions 0 and 3 beat its own caption 1
            [0.1, 0.3, 0.3, 0.9],  # image 2: best caption 3 (its own)
        ]
    )
    owner = np.array([0, 1, 0, 2])  # image 0 has captions 0 and 2
    result = evaluation.recall_at_k(similarity, owner, ks=(1, 2, 3))
    assert result["i2t_recall@1"] == pytest.approx(2 / 3)
    assert result["i2t_recall@2"] == pytest.approx(2 / 3)
    assert result["i2t_recall@3"] == 1.0
    # Captions: 0 -> image 0 (hit); 1 -> image 2 scores 0.3 > 0.2 (miss at 1, hit at 2);
    # 2 -> image 0 (hit); 3 -> image 2 (hit).
    assert result["t2i_recall@1"] == pytest.approx(3 / 4)
    assert result["t2i_recall@2"] == 1.0


def test_retrieval_on_a_model_that_knows_the_answer():
    model, images = OneHotModel(), images_of([0, 1, 2])
    # Image 2 (a bird) is captioned "a fish": it ties with every caption, a miss at 1.
    captions = [["a cat", "the cat"], ["a dog"], ["a fish"]]
    result = evaluation.retrieval(model, word_tokenizer, images, captions, ks=(1, 5))
    assert result["i2t_recall@1"] == pytest.approx(2 / 3)
    assert result["t2i_recall@1"] == pytest.approx(3 / 4)
    assert result["i2t_recall@5"] == 1.0 and result["t2i_recall@5"] == 1.0
    # An (N, C) array with empty padding, and one str per image, give the same.
    padded = np.array([["a cat", "the cat"], ["a dog", ""], ["a fish", ""]], dtype=object)
    assert evaluation.retrieval(model, word_tokenizer, images, padded, ks=(1, 5)) == result
    single = evaluation.retrieval(model, word_tokenizer, images, ["a cat", "a dog", "a bird"])
    assert single["i2t_recall@1"] == 1.0 and single["t2i_recall@1"] == 1.0
    with pytest.raises(ValueError, match="lengths"):
        evaluation.retrieval(model, word_tokenizer, images, ["a cat", "a dog"])
    with pytest.raises(ValueError, match="No tokenizer"):
        evaluation.retrieval(model, None, images, captions)


# -------------------------------------------------------------------- segmentation
def test_miou_against_a_hand_computed_confusion_matrix():
    truth = np.array([[0, 1, 1], [2, 2, 0]])
    prediction = np.array([[1, 1, 2], [2, 1, 0]])
    confusion = evaluation.confusion_matrix(truth, prediction, 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_allclose(evaluation.iou_from_confusion(confusion), [1 / 2, 1 / 4, 1 / 3])
    ignored = evaluation.confusion_matrix(truth, prediction, 3, ignore=0)
    np.testing.assert_array_equal(ignored, [[0, 0, 0], [0, 1, 1], [0, 1, 1]])
    iou = evaluation.iou_from_confusion(ignored)
    assert np.isnan(iou[0]) and np.allclose(iou[1:], [1 / 3, 1 / 3])


def test_zero_shot_segmentation_on_known_features():
    model = OneHotModel()
    masks = np.array([[[0, 1], [2, 1]], [[3, 3], [0, 2]]])
    # Pixel value = class index / 10; background pixels look like "fish" (class 3).
    images = np.repeat(np.where(masks > 0, masks - 1, 3)[..., None] / 10.0, 3, axis=-1)
    result = evaluation.zero_shot_segmentation(model, word_tokenizer, images, masks, CLASSES)
    assert result == {"miou": 1.0, "pixel_accuracy": 1.0, **{f"iou/{c}": 1.0 for c in CLASSES[:3]}}
    # Scored with a background prompt class (it embeds as index 7, so it never wins): the two
    # background pixels predicted "fish" make background IoU 0 and fish IoU 0.
    result = evaluation.zero_shot_segmentation(
        model, word_tokenizer, images, masks, CLASSES, background="include"
    )
    assert result["iou/background"] == 0.0 and result["iou/fish"] == 0.0
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)
    assert result["miou"] == pytest.approx((0 + 1 + 1 + 1 + 0) / 5)
    assert "iou/frog" not in result  # never in the truth nor predicted
    # One cat pixel predicted dog; a bird predicted on a background pixel is not scored.
    masks = np.array([[[1, 1], [2, 0]]])
    images = np.repeat(np.array([[[0, 1], [1, 2]]])[..., None] / 10.0, 3, axis=-1)
    result = evaluation.zero_shot_segmentation(
        model, word_tokenizer, images, masks, CLASSES, batch_size=1
    )
    assert result == {"miou": 0.5, "pixel_accuracy": 2 / 3, "iou/cat": 0.5, "iou/dog": 0.5}
    labels = evaluation.segment(model, word_tokenizer, images, CLASSES)
    np.testing.assert_array_equal(labels, [[[1, 2], [2, 3]]])


def test_segmentation_errors():
    model, masks = OneHotModel(), np.zeros((2, 4, 4), int)
    images = images_of([0, 1])
    with pytest.raises(ValueError, match="lengths"):
        evaluation.zero_shot_segmentation(model, word_tokenizer, images, masks[:1], CLASSES)
    with pytest.raises(ValueError, match="Mask values"):
        evaluation.zero_shot_segmentation(model, word_tokenizer, images, masks + 6, CLASSES)
    with pytest.raises(ValueError, match="background must be"):
        evaluation.zero_shot_segmentation(
            model, word_tokenizer, images, masks, CLASSES, background="yes"
        )
    with pytest.raises(ValueError, match="No pixels"):  # all background, ignored
        evaluation.zero_shot_segmentation(model, word_tokenizer, images, masks, CLASSES)


# ------------------------------------------------------------------------ few-shot
def test_ridge_matches_a_direct_solve():
    rng = np.random.default_rng(0)
    for n in (30, 4):  # the primal (N >= D) and the dual (N < D) solution
        features = rng.normal(size=(n, 5))
        labels = np.arange(n) % 3
        weights, mean, std = evaluation.fit_ridge(features, labels, 3, l2_regularization=2.0)
        std_expected = features.std(0) + 1e-5
        x = np.concatenate(
            [(features - features.mean(0)) / std_expected, np.full((n, 1), 100.0)], 1
        )
        y = 2 * np.eye(3)[labels] - 1
        expected = np.linalg.solve(x.T @ x + 2.0 * np.eye(6), x.T @ y)
        np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(std, std_expected[None])
        test = rng.normal(size=(7, 5))
        x_test = np.concatenate([(test - mean) / std, np.full((7, 1), 100.0)], 1)
        predictions = evaluation.predict_ridge(weights, mean, std, test)
        np.testing.assert_array_equal(predictions, np.argmax(x_test @ expected, 1))
        accuracy = evaluation.fewshot_accuracy(features, labels, test, predictions, 3, 2.0)
        assert accuracy == 1.0


def test_shot_sampling_is_seeded_and_nested():
    labels = np.repeat(np.arange(3), 10)
    one = evaluation.sample_shots(labels, 1, seed=0, num_classes=3)
    five = evaluation.sample_shots(labels, 5, seed=0, num_classes=3)
    assert len(one) == 3 and len(five) == 15
    np.testing.assert_array_equal(np.bincount(labels[five]), [5, 5, 5])
    assert set(one) <= set(five)
    np.testing.assert_array_equal(five, evaluation.sample_shots(labels, 5, 0, 3))
    assert not np.array_equal(five, evaluation.sample_shots(labels, 5, 1, 3))


def test_few_shot_is_exact_on_separable_features():
    model = OneHotModel()
    train = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    test = np.array([2, 1, 0, 0])
    result = evaluation.few_shot_classification(
        model, images_of(train), train, images_of(test), test, shots=(1, 3), seeds=2
    )
    assert set(result) == {
        f"{k}shot_{s}" for k in (1, 3) for s in ("mean", "std", "seed0", "seed1")
    }
    assert result["1shot_mean"] == 1.0 and result["3shot_std"] == 0.0
    with pytest.raises(ValueError, match="4-shot needs 4"):
        evaluation.few_shot_classification(
            model, images_of(train), train, images_of(test), test, shots=(4,)
        )
    with pytest.raises(ValueError, match="lengths"):
        evaluation.few_shot_classification(
            model, images_of(train), train[:3], images_of(test), test, shots=(1,)
        )
    with pytest.raises(ValueError, match="test labels must be in"):
        evaluation.few_shot_classification(
            model, images_of(train), train, images_of(test), test + 1, shots=(1,), num_classes=3
        )


def test_label_and_input_errors():
    model = OneHotModel()
    with pytest.raises(ValueError, match="labels must be in"):
        evaluation.zero_shot_classification(model, word_tokenizer, images_of([4]), [4], CLASSES[:3])
    with pytest.raises(ValueError, match="lengths"):
        evaluation.zero_shot_classification(model, word_tokenizer, images_of([0, 1]), [0], CLASSES)
    with pytest.raises(ValueError, match="No tokenizer"):
        evaluation.zero_shot_classification(model, None, images_of([0]), [0], CLASSES)
    with pytest.raises(ValueError, match="Pass label"):
        evaluation.zero_shot_classification(
            model, word_tokenizer, images_of([0]), class_names=CLASSES
        )
    with pytest.raises(KeyError, match="label"):
        evaluation.zero_shot_classification(
            model, word_tokenizer, {"image": images_of([0])}, class_names=CLASSES
        )


def test_non_finite_embeddings_are_errors_not_hits():
    class NanModel(OneHotModel):  # NaN scores compare False: they must not count as hits
        def encode_image(self, images):
            return np.full((len(images), 8), np.nan, np.float32)

        def dense_image_features(self, images, source="map_values"):
            return np.full((*np.shape(images)[:3], 8), np.nan, np.float32)

    model, images = NanModel(), images_of([0, 1])
    with pytest.raises(FloatingPointError, match="non-finite image embeddings"):
        evaluation.zero_shot_classification(model, word_tokenizer, images, [0, 1], CLASSES)
    with pytest.raises(FloatingPointError, match="non-finite"):
        evaluation.retrieval(model, word_tokenizer, images, ["a cat", "a dog"])
    with pytest.raises(FloatingPointError, match="non-finite dense features"):
        evaluation.zero_shot_segmentation(
            model, word_tokenizer, images, np.ones((2, 4, 4), int), CLASSES
        )


# ---------------------------------------------------------------- on a real model
def test_every_evaluation_runs_on_a_real_model(real_model, tmp_path):
    model = real_model
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 40, 40, 3), dtype=np.uint8)  # resized to 32
    labels = np.arange(12) % 3
    names = ["cat", "dog", "bird"]
    masks = rng.integers(0, 4, (12, 20, 24))  # any mask size: scores are upsampled to it
    results = {}
    results.update(
        evaluation.zero_shot_classification(model, word_tokenizer, images, labels, names)
    )
    results.update(
        evaluation.few_shot_classification(
            model, images, labels, images, labels, shots=(2,), seeds=2
        )
    )
    captions = [[f"a {names[i]}", f"the {names[i]}"] for i in labels]
    results.update(evaluation.retrieval(model, word_tokenizer, images, captions))
    for background in ("ignore", "include"):
        results.update(
            evaluation.zero_shot_segmentation(
                model, word_tokenizer, images, masks, names, background=background, batch_size=6
            )
        )
    assert {"top1", "2shot_mean", "i2t_recall@10", "t2i_recall@1", "miou"} <= set(results)
    for key, value in results.items():
        assert isinstance(value, float) and np.isfinite(value) and 0.0 <= value <= 1.0, key
    predictions = evaluation.segment(model, word_tokenizer, images[:3], names, source="tokens")
    assert predictions.shape == (3, 40, 40) and predictions.min() >= 1
    assert predictions.max() <= 3
    path = evaluation.plot_segmentation(
        images[:3],
        predictions,
        rng.integers(0, 4, (3, 40, 40)),
        names,
        str(tmp_path / "s.png"),
        captions=["a cat", "a dog", "a bird"],
    )
    assert os.path.getsize(path) > 1000
    with pytest.raises(ValueError, match="Token ids must be in"):
        evaluation.class_embeddings(model, lambda texts: np.full((len(texts), 4), 10**6), names)


def test_compiled_calls_follow_the_weights(real_model):
    model = real_model
    images = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    before = evaluation.embed_images(model, images)
    np.testing.assert_allclose(
        before, keras.ops.convert_to_numpy(model.encode_image(images)), atol=1e-5
    )
    weights = model.get_weights()
    model.set_weights([w * 1.5 if w.ndim == 2 else w for w in weights])
    after = evaluation.embed_images(model, images)
    np.testing.assert_allclose(
        after, keras.ops.convert_to_numpy(model.encode_image(images)), atol=1e-5
    )
    assert np.abs(after - before).max() > 1e-3
    model.set_weights(weights)


def test_callback_writes_history_and_tensorboard(real_model, tmp_path):
    model = real_model
    # Tracing the SILC train step takes TensorFlow most of a minute on a CPU; the callback
    # does not care how the steps run.
    model.compile(run_eagerly=keras.backend.backend() == "tensorflow")
    batch = model.preprocessor.example_batch(4)
    images = np.random.default_rng(0).random((6, 32, 32, 3), dtype=np.float32)
    zero_shot = functools.partial(
        evaluation.zero_shot_classification,
        tokenizer=word_tokenizer,
        images=images,
        labels=np.arange(6) % 2,
        class_names=["cat", "dog"],
    )
    calls = []

    def probe(m):
        calls.append(int(keras.ops.convert_to_numpy(m.optimizer.iterations)))
        return {"center_norm": float(np.linalg.norm(keras.ops.convert_to_numpy(m.center)))}

    per_epoch = evaluation.EvaluationCallback(
        {"zero_shot": zero_shot, "probe": probe}, log_dir=str(tmp_path / "tb")
    )
    per_step = evaluation.EvaluationCallback([probe], every_n_steps=2, prefix="step/")
    history = model.fit(
        batch, batch_size=4, epochs=2, verbose=0, callbacks=[per_epoch, per_step]
    ).history
    assert len(history["eval/zero_shot/top1"]) == 2
    assert len(history["eval/probe/center_norm"]) == 2 and history["eval/probe/center_norm"][1] > 0
    # One step per epoch: the per-step callback runs once, at step 2, and the second epoch's
    # logs carry its results.
    assert [step for step, _ in per_step.results] == [2]
    assert len(history["step/probe/center_norm"]) == 1
    assert sorted(calls) == [1, 2, 2]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    path = evaluation.plot_metrics(history, str(tmp_path / "curves.png"))
    assert os.path.getsize(path) > 1000
    path = evaluation.plot_metrics(
        {"miou": [(100, 0.1), (200, 0.3)]}, str(tmp_path / "steps.png"), x_label="step"
    )
    assert os.path.getsize(path) > 1000


def test_distillation_diagnostics_see_both_collapses():
    model = tiny_model()
    images = np.random.default_rng(0).uniform(size=(12, 32, 32, 3)).astype("float32")
    fresh = evaluation.distillation_diagnostics(model, images)
    # Against the whole tower's forward pass and a numpy softmax at tau_t after centring.
    logits = keras.ops.convert_to_numpy(model.teacher(images)).astype(np.float64)
    scores = (logits - keras.ops.convert_to_numpy(model.center)) / model.teacher_temperature
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(fresh["entropy"], -(p * np.log(p)).sum(1).mean(), rtol=1e-4)
    assert fresh["max_entropy"] == pytest.approx(np.log(logits.shape[1]))
    assert fresh["prototypes_used"] == len(np.unique(p.argmax(1)))
    assert fresh["collapse"] == "none" and -1 <= fresh["bottleneck_cosine"] < 0.99
    # Every prototype the same vector: the same score for all K, a uniform target.
    kernel = model.teacher.head.prototypes.kernel
    column = keras.ops.convert_to_numpy(kernel)[:, :1]
    kernel.assign(np.repeat(column, kernel.shape[1], axis=1))
    uniform = evaluation.distillation_diagnostics(model, images)
    assert uniform["collapse"] == "uniform"
    assert uniform["entropy"] == pytest.approx(uniform["max_entropy"], abs=1e-5)
    # A centre far below one prototype's: that prototype takes every image.
    center = np.zeros(kernel.shape[1], "float32")
    center[3] = -50.0
    model.center.assign(center)
    dominant = evaluation.distillation_diagnostics(model, images)
    assert dominant["collapse"] == "dominant" and dominant["prototypes_used"] == 1
    assert dominant["entropy"] < 1e-3
    with pytest.raises(ValueError, match="self_distillation"):
        evaluation.distillation_diagnostics(
            tiny_model(self_distillation=False, multi_view_contrastive=True), images
        )


def test_argument_mistakes_get_a_message_that_says_the_fix():
    model, images = OneHotModel(), images_of([0, 1])

    def zero_shot(**changes):
        arguments = dict(images=images, labels=[0, 1], class_names=CLASSES) | changes
        return evaluation.zero_shot_classification(model, word_tokenizer, **arguments)

    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        zero_shot(batch_size=0)
    with pytest.raises(ValueError, match="not the path 'vocab.model'.*SilcTokenizer.from_file"):
        evaluation.zero_shot_classification(model, "vocab.model", images, [0, 1], CLASSES)
    with pytest.raises(ValueError, match=r"single string 'cat'; wrap it: \['cat'\]"):
        zero_shot(class_names="cat")
    with pytest.raises(ValueError, match="integer class indices.*class_names.index"):
        zero_shot(labels=["cat", "dog"])
    with pytest.raises(ValueError, match="integer class indices, got 1.5"):
        zero_shot(labels=[0.0, 1.5])
    with pytest.raises(ValueError, match="every value of ks must be a positive integer"):
        zero_shot(ks=(0,))
    with pytest.raises(ValueError, match=r"'image' rows have different shapes.*resize"):
        zero_shot(images=[images[0], images[1, :2, :2]])
    with pytest.raises(ValueError, match=r"images must be floats in \[0, 1\].*divide by 255"):
        zero_shot(images=images * 255.0)
    with pytest.raises(KeyError, match=r"no \['image'\] \(it has \['img', 'label'\]\)"):
        evaluation.zero_shot_classification(
            model, word_tokenizer, {"img": images, "label": [0, 1]}, class_names=CLASSES
        )
    with pytest.raises(ValueError, match="captions must hold one entry per image"):
        evaluation.retrieval(model, word_tokenizer, images[:1], "a cat")
    with pytest.raises(ValueError, match="seeds must be a positive integer, got 0"):
        evaluation.few_shot_classification(model, images, [0, 1], images, [0, 1], seeds=0)
    with pytest.raises(ValueError, match="every value of shots must be a positive integer"):
        evaluation.few_shot_classification(model, images, [0, 1], images, [0, 1], shots=(0,))
    with pytest.raises(ValueError, match="integer class indices"):
        evaluation.few_shot_classification(model, images, ["a", "b"], images, [0, 1], shots=1)

    # What is unambiguous is taken as meant: one int for ks / shots, one str template,
    # integer-valued float labels.
    assert zero_shot(ks=1, templates="a photo of a {}.", labels=[0.0, 1.0]) == {"top1": 1.0}
    assert set(evaluation.retrieval(model, word_tokenizer, images, ["a cat", "a dog"], ks=1)) == {
        "i2t_recall@1",
        "t2i_recall@1",
    }
    few_shot = evaluation.few_shot_classification(
        model, images, [0, 1], images, [0, 1], shots=1, seeds=1
    )
    assert few_shot["1shot_mean"] == 1.0


def test_image_and_text_inputs_are_checked_on_a_real_model(real_model):
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"encode_image's images must be floats in \[0, 1\]"):
        real_model.encode_image(images * 255.0)
    with pytest.raises(ValueError, match=r"add a batch axis: images\[None\]"):
        real_model.encode_image(images[0])
    with pytest.raises(ValueError, match=r"add a batch axis: token_ids\[None\]"):
        real_model.encode_text(np.array([3, 4, 0, 0], np.int32))
    with pytest.raises(ValueError, match="SilcModel.predict's 'image' must be floats"):
        real_model.predict({"image": images * 255.0}, verbose=0)
    with pytest.raises(ValueError, match="dense_source must be 'map_values', 'tokens' or None"):
        real_model.image_feature_extractor(dense_source="foo")
    extractor = real_model.image_feature_extractor()
    with pytest.raises(ValueError, match="ImageFeatureExtractor's images must be floats"):
        extractor(images * 255.0)
    # uint8 pixels are scaled to [0, 1], as the evaluators and the data pipeline do.
    pixels = np.round(images * 255.0).astype(np.uint8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(real_model.encode_image(pixels)),
        keras.ops.convert_to_numpy(real_model.encode_image(pixels / np.float32(255.0))),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(extractor(pixels)["pooled"]),
        keras.ops.convert_to_numpy(real_model.encode_image(pixels)),
        atol=1e-5,
    )


def test_an_empty_batch_gives_empty_embeddings_on_every_backend(real_model):
    # Keras's attention divides by the batch size under JAX and PyTorch.
    images = np.zeros((0, 32, 32, 3), np.float32)
    width = real_model.encode_image(np.zeros((1, 32, 32, 3), np.float32)).shape[-1]
    assert tuple(real_model.encode_image(images).shape) == (0, width)
    assert tuple(real_model.encode_text(np.zeros((0, 8), np.int32)).shape) == (0, width)
    dense = real_model.dense_image_features(images)
    assert tuple(dense.shape[:1]) == (0,) and tuple(dense.shape[-1:]) == (width,)
    features = real_model.image_feature_extractor()(images)
    assert tuple(features["pooled"].shape) == (0, width)
    assert tuple(features["dense"].shape) == tuple(dense.shape)


def test_one_rgb_image_is_refused_not_read_as_rows_of_grey_images(real_model):
    model, image = OneHotModel(), images_of([1], size=6)[0]  # (6, 6, 3)
    one_image = r"shape \(6, 6, 3\) look like one \(H, W, 3\) RGB image.*images\[None\]"
    with pytest.raises(ValueError, match=one_image):
        evaluation.embed_images(model, image)  # was 6 "images" of 6 x 3 grey pixels
    with pytest.raises(ValueError, match=one_image):
        evaluation.segment(model, word_tokenizer, image, CLASSES)
    with pytest.raises(ValueError, match=one_image):
        evaluation.zero_shot_classification(model, word_tokenizer, image, [1] * 6, CLASSES)
    with pytest.raises(ValueError, match=one_image):
        evaluation.distillation_diagnostics(real_model, image)
    # A batch of one, and grey (N, H, W) batches, are read as before.
    assert evaluation.embed_images(model, image[None]).shape == (1, 8)
    grey = evaluation.as_float_images(np.full((2, 6, 5), 255, np.uint8))
    assert grey.shape == (2, 6, 5, 3) and np.all(grey == 1.0)


def test_fractional_mask_values_are_refused_not_truncated():
    model, images = OneHotModel(), images_of([0, 1])
    masks = np.ones((2, 4, 4))
    expected = evaluation.zero_shot_segmentation(model, word_tokenizer, images, masks, CLASSES)
    assert expected == evaluation.zero_shot_segmentation(  # integer-valued floats: as ints
        model, word_tokenizer, images, masks.astype(int), CLASSES
    )
    for fractional in (masks + 0.7, masks * 0.5):  # were 1 and 0: silently truncated
        with pytest.raises(ValueError, match=r"Mask values must be integer.*nearest-neighbour"):
            evaluation.zero_shot_segmentation(model, word_tokenizer, images, fractional, CLASSES)


def test_segmentation_refuses_duplicate_class_names():
    model, images, masks = OneHotModel(), images_of([0, 1]), np.ones((2, 4, 4), int)
    with pytest.raises(ValueError, match=r"class_names holds 'cat' twice \(at 0 and 2\)"):
        evaluation.zero_shot_segmentation(
            model, word_tokenizer, images, masks, ["cat", "dog", "cat"]
        )
    with pytest.raises(ValueError, match="class_names holds 'cat' twice"):
        evaluation.segment(model, word_tokenizer, images, ["cat", "cat"])
    with pytest.raises(ValueError, match="background_name 'background' is also a class name"):
        evaluation.zero_shot_segmentation(
            model, word_tokenizer, images, masks, ["cat", "background"], background="include"
        )


def test_segment_checks_out_size_and_empty_input():
    model, images = OneHotModel(), images_of([0, 1])
    for out_size in [(0, 0), (-4, 8), (16.7, 16.2), (4, 4, 4), "44"]:
        with pytest.raises(ValueError, match="out_size must be a positive int or a"):
            evaluation.segment(model, word_tokenizer, images, CLASSES, out_size=out_size)
    with pytest.raises(ValueError, match="No images to segment"):
        evaluation.segment(model, word_tokenizer, images[:0], CLASSES)
    # One int is a square, as crop_size and stride take it.
    square = evaluation.segment(model, word_tokenizer, images, CLASSES, out_size=2)
    np.testing.assert_array_equal(
        square, evaluation.segment(model, word_tokenizer, images, CLASSES, out_size=(2, 2))
    )
    assert square.shape == (2, 2, 2)


def test_confusion_matrix_and_plot_check_their_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"truth holds the label -1, outside \[0, 3\).*ignore="):
        evaluation.confusion_matrix([0, -1, 2], [0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"truth holds the label 5, outside \[0, 3\)"):
        evaluation.confusion_matrix([0, 5, 2], [0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"prediction holds the label 3"):
        evaluation.confusion_matrix([0, 1, 2], [0, 3, 2], 3)
    with pytest.raises(ValueError, match=r"truth of shape \(2,\) but prediction of shape \(3,\)"):
        evaluation.confusion_matrix([0, 1], [0, 1, 2], 3)
    with pytest.raises(ValueError, match="truth must be integer class indices, got 0.5"):
        evaluation.confusion_matrix([0, 0.5, 2], [0, 1, 2], 3)
    # The ignored label may lie outside the classes (255, or -1).
    for ignore in (255, -1):
        confusion = evaluation.confusion_matrix([0, ignore, 2], [0, 1, 2], 3, ignore=ignore)
        np.testing.assert_array_equal(confusion, np.diag([1, 0, 1]))
    images, labels = np.zeros((3, 4, 4, 3), np.uint8), np.ones((3, 4, 4), int)
    with pytest.raises(ValueError, match=r"lengths \{'images': 3, 'predictions': 3, 'masks': 2\}"):
        evaluation.plot_segmentation(images, labels, labels[:2], ["cat"], str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="'captions': 1"):
        evaluation.plot_segmentation(
            images, labels, None, ["cat"], str(tmp_path / "b.png"), captions=["a cat"]
        )


def test_evaluation_callback_arguments_are_checked_when_it_is_made(tmp_path):
    def probe(model):
        return {"x": 1.0}

    # every_n_epochs=0 never evaluated, -1 evaluated every epoch; a str failed after epoch 1.
    for every in (0, -1, "2"):
        with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
            evaluation.EvaluationCallback(probe, every_n_epochs=every)
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer, got '5'"):
        evaluation.EvaluationCallback(probe, every_n_steps="5")
    with pytest.raises(ValueError, match="evaluations must be a callable"):
        evaluation.EvaluationCallback(None)
    with pytest.raises(ValueError, match="prefix must be a str"):
        evaluation.EvaluationCallback(probe, prefix=None)  # made keys "None<name>/x"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        evaluation.EvaluationCallback(probe, log_dir=str(tmp_path / "file"))
    with pytest.raises(ValueError, match="is a folder; give a CSV file path"):
        evaluation.EvaluationCallback(probe, records=str(tmp_path))


def test_embedding_nothing_says_so(real_model):
    with pytest.raises(ValueError, match="No images to embed"):
        evaluation.embed_images(real_model, np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="No texts to embed"):
        evaluation.embed_texts(real_model, word_tokenizer, [])
