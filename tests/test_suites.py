"""The benchmark suites: class lists, data readers (folders, Karpathy JSON, TFDS mocks), known
answers for zero-shot top-1/top-5 and Recall@K, the report and the command line."""

import json
import os
import pickle
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_silc import cli
from keras_silc import evaluation
from keras_silc.evaluation import suites
from keras_silc.evaluation.suites import data
from keras_silc.evaluation.suites import prompts

SIZE = 8  # the fake models' image size
STEP = 20  # pixel value per code unit: codes survive the uint8 round trip exactly


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def coded_image(red, green=0, size=SIZE):
    """A constant image carrying two small integers: resizing keeps a constant image exact."""
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0], image[..., 1] = red * STEP, green * STEP
    return image


def pixel_codes(images):
    """(red, green) codes of float [0, 1] images, as coded_image wrote them."""
    first = np.asarray(images, np.float32)[:, 0, 0, :2] * 255 / STEP
    return np.rint(first).astype(int).T


# ------------------------------------------------------------------- class lists
def test_class_names_and_templates_are_clips():
    assert len(prompts.IMAGENET_CLASS_NAMES) == 1000
    assert prompts.IMAGENET_CLASS_NAMES[:3] == ("tench", "goldfish", "great white shark")
    assert prompts.IMAGENET_CLASS_NAMES[207] == "Golden Retriever"
    assert prompts.IMAGENET_CLASS_NAMES[-1] == "toilet paper"
    assert len(prompts.IMAGENET_TEMPLATES) == 80 == len(set(prompts.IMAGENET_TEMPLATES))
    assert prompts.IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert prompts.IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert "itap of a {}." in prompts.IMAGENET_TEMPLATES
    assert prompts.CIFAR10_CLASS_NAMES == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    assert len(prompts.CIFAR100_CLASS_NAMES) == 100 == len(set(prompts.CIFAR100_CLASS_NAMES))
    assert prompts.CIFAR100_CLASS_NAMES[:2] == ("apple", "aquarium fish")
    assert prompts.CIFAR100_CLASS_NAMES[-1] == "worm"
    assert len(prompts.CIFAR_TEMPLATES) == 18
    for template in prompts.IMAGENET_TEMPLATES + prompts.CIFAR_TEMPLATES:
        assert template.count("{}") == 1, template


def test_the_registry_names_every_suite_with_one_signature():
    import inspect

    assert list(suites.SUITES) == [
        "imagenet",
        "cifar10",
        "cifar100",
        "coco",
        "flickr30k",
        "ade20k",
        "pascal_context",
        "cityscapes",
        "pascal_voc",
        "coco_stuff",
    ]
    for name in ("imagenet", "cifar10", "cifar100", "coco", "flickr30k"):
        parameters = inspect.signature(suites.SUITES[name]).parameters
        assert list(parameters)[:2] == ["model", "data_dir"]
        for keyword in ("tokenizer", "batch_size", "max_examples", "output_dir", "verbose"):
            assert parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY
    assert suites.parse_suites(" imagenet,coco,imagenet") == ["imagenet", "coco"]
    with pytest.raises(ValueError, match="Unknown suite.*'imagenet21k'.*choose from imagenet"):
        suites.parse_suites("imagenet21k")


def test_a_missing_segmentation_module_is_not_implemented(monkeypatch):
    monkeypatch.setattr(suites, "SEGMENTATION_MODULE", "keras_silc.evaluation.suites.nothing")
    with pytest.raises(NotImplementedError, match="'ade20k' is not available"):
        suites.SUITES["ade20k"](None, "unused")


# ------------------------------------------------------------------ zero-shot
class RankModel:
    """Knows its answers. A text embeds as the one-hot of the slot of the class it names
    (`slots`: class index -> slot; every other class shares the last slot). An image coded
    (slot s, rank r) scores its true class (slot s) 0.5 and the r classes of the next slots
    higher, so the true class has rank r exactly."""

    def __init__(self, slots, prompt_classes):
        self.slots, self.prompt_classes = slots, prompt_classes
        self.dim = len(slots) + 1
        self.vision_config = {"image_size": SIZE}
        self.num_prompts = 0

    def tokenize(self, texts):
        self.num_prompts += len(texts)
        return np.array([[self.prompt_classes[t] + 1] for t in texts], np.int32)

    def encode_text(self, ids):
        slots = [self.slots.get(int(i) - 1, self.dim - 1) for i in np.asarray(ids)[:, 0]]
        return keras.ops.convert_to_tensor(np.eye(self.dim, dtype=np.float32)[slots])

    def encode_image(self, images):
        out = np.zeros((len(images), self.dim), np.float32)
        for row, (slot, rank) in enumerate(zip(*pixel_codes(images), strict=True)):
            out[row, slot] = 0.5
            for k in range(rank):
                out[row, (slot + 1 + k) % (self.dim - 1)] = 0.9 - 0.01 * k
        return keras.ops.convert_to_tensor(out)


def imagenet_model(classes):
    prompt_classes = {
        template.format(name): index
        for index, name in enumerate(prompts.IMAGENET_CLASS_NAMES)
        for template in prompts.IMAGENET_TEMPLATES
    }
    return RankModel({c: slot for slot, c in enumerate(classes)}, prompt_classes)


# Ten classes with their own slot; six images: (true class, rank of the true class).
SLOTTED = [0, 1, 2, 3, 4, 5, 6, 7, 8, 999]
IMAGES = [(0, 0), (999, 0), (3, 2), (5, 4), (7, 5), (1, 8)]


def imagenet_folder(root, with_images=True):
    for index in range(1000):  # synset-like names whose sorted order is the index order
        os.makedirs(os.path.join(root, "imagenet", "val", f"n{index:08d}"), exist_ok=True)
    if with_images:
        for number, (label, rank) in enumerate(IMAGES):
            path = os.path.join(root, "imagenet", "val", f"n{label:08d}", f"val_{number}.JPEG")
            write_png(path, coded_image(SLOTTED.index(label), rank, size=13))


@pytest.mark.parametrize("resize", ["squash", "center_crop"])
def test_imagenet_folder_top1_top5_known_answer(tmp_path, resize):
    imagenet_folder(str(tmp_path))
    model = imagenet_model(SLOTTED)
    report = suites.SUITES["imagenet"](
        model, str(tmp_path), tokenizer=model.tokenize, batch_size=4, verbose=0, resize=resize
    )
    # Ranks 0, 0, 2, 4, 5, 8: top-1 2 of 6, top-5 4 of 6.
    assert report["metrics"] == {"top1": pytest.approx(2 / 6), "top5": pytest.approx(4 / 6)}
    assert model.num_prompts == 1000 * 80  # every class with every CLIP template
    settings = report["settings"]
    assert settings["source"] == f"folder:{tmp_path}/imagenet/val"
    assert (settings["num_examples"], settings["num_classes"], settings["num_templates"]) == (
        6,
        1000,
        80,
    )
    assert settings["resize"] == resize and settings["image_size"] == SIZE
    json.dumps(report)
    # The first N images in folder order: classes 0 (rank 0) and 1 (rank 8).
    report = suites.SUITES["imagenet"](
        model, str(tmp_path), tokenizer=model.tokenize, max_examples=2, verbose=0
    )
    assert report["metrics"] == {"top1": 0.5, "top5": 0.5}
    assert report["settings"]["num_examples"] == 2


def test_imagenet_layout_errors(tmp_path):
    model = imagenet_model(SLOTTED)
    with pytest.raises(FileNotFoundError, match="ImageNet-1k validation not found") as error:
        suites.SUITES["imagenet"](model, str(tmp_path), tokenizer=model.tokenize)
    message = str(error.value)
    assert os.path.join(str(tmp_path), "imagenet", "val") in message
    assert "TFDS 'imagenet2012' split 'validation'" in message
    assert "valprep.sh" in message and "tfds build imagenet2012" in message
    os.makedirs(tmp_path / "imagenet" / "val" / "n00000001")
    with pytest.raises(ValueError, match="exactly 1000 synset folders.*holds 1 folders"):
        suites.SUITES["imagenet"](model, str(tmp_path), tokenizer=model.tokenize)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        suites.SUITES["imagenet"](model, str(tmp_path / "nowhere"), tokenizer=model.tokenize)
    with pytest.raises(ValueError, match="resize='bilinear'"):
        suites.SUITES["imagenet"](model, str(tmp_path), tokenizer=model.tokenize, resize="bilinear")


def cifar_model(class_names, templates=prompts.CIFAR_TEMPLATES):
    prompt_classes = {t.format(n): i for i, n in enumerate(class_names) for t in templates}
    return RankModel({i: i for i in range(len(class_names))}, prompt_classes)


CIFAR_LABELS = np.array([0, 1, 2, 3, 9, 5])
CIFAR_CODED = np.array([0, 1, 2, 7, 9, 5])  # the model sees class 7 in the label-3 image


def cifar_images(codes):
    return np.stack([coded_image(c, size=32) for c in codes])


def test_cifar_from_tfds_mock_known_answer(tmp_path):
    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": cifar_images(CIFAR_CODED),
                "label": CIFAR_LABELS,
                "id": [str(i) for i in range(6)],
                "coarse_label": np.zeros(6, np.int64),
            }
        )

    model = cifar_model(prompts.CIFAR10_CLASS_NAMES)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        report = suites.SUITES["cifar10"](
            model, str(tmp_path), tokenizer=model.tokenize, batch_size=4, verbose=0
        )
    assert report["metrics"] == {"top1": pytest.approx(5 / 6), "top5": pytest.approx(5 / 6)}
    assert report["settings"]["source"] == "tfds:cifar10/test"
    assert model.num_prompts == 10 * 18


def test_random_tfds_mocks_stream_through_every_classification_suite(tmp_path):
    class AnyModel(RankModel):
        def encode_image(self, images):
            assert images.shape[1:] == (SIZE, SIZE, 3) and 0 <= images.min() <= 1
            return super().encode_image(np.zeros_like(images))

    names = {
        "imagenet": prompts.IMAGENET_CLASS_NAMES,
        "cifar100": prompts.CIFAR100_CLASS_NAMES,
    }
    for suite, class_names in names.items():
        templates = prompts.IMAGENET_TEMPLATES if suite == "imagenet" else prompts.CIFAR_TEMPLATES
        prompt_classes = {t.format(n): i for i, n in enumerate(class_names) for t in templates}
        model = AnyModel({0: 0}, prompt_classes)
        with tfds.testing.mock_data(num_examples=5):
            report = suites.SUITES[suite](
                model, str(tmp_path), tokenizer=model.tokenize, batch_size=2, verbose=0
            )
        assert report["settings"]["num_examples"] == 5
        assert 0 <= report["metrics"]["top1"] <= report["metrics"]["top5"] <= 1


def write_cifar_python(path, images, labels, label_key):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flat = np.asarray(images).transpose(0, 3, 1, 2).reshape(len(images), -1)  # the release's layout
    with open(path, "wb") as handle:
        pickle.dump({b"data": flat, label_key: list(map(int, labels))}, handle)


def test_cifar_python_folders_known_answer_and_before_tfds(tmp_path):
    # Red carries the code: a wrong channel order would read 0 everywhere.
    for suite, folder, key, names in (
        ("cifar10", "cifar-10-batches-py/test_batch", b"labels", prompts.CIFAR10_CLASS_NAMES),
        ("cifar100", "cifar-100-python/test", b"fine_labels", prompts.CIFAR100_CLASS_NAMES),
    ):
        path = os.path.join(str(tmp_path), folder)
        write_cifar_python(path, cifar_images(CIFAR_CODED), CIFAR_LABELS, key)
        model = cifar_model(names)
        with tfds.testing.mock_data(num_examples=3):  # TFDS would answer, the folder comes first
            report = suites.SUITES[suite](model, str(tmp_path), tokenizer=model.tokenize, verbose=0)
        assert report["metrics"]["top1"] == pytest.approx(5 / 6), suite
        assert report["settings"]["source"] == f"folder:{path}"
    with open(path, "wb") as handle:
        pickle.dump({b"nothing": 1}, handle)
    with pytest.raises(ValueError, match="not a CIFAR python batch"):
        suites.SUITES["cifar100"](model, str(tmp_path), tokenizer=model.tokenize, verbose=0)


# ------------------------------------------------------------------ retrieval
# Captions (image i, caption k) whose query ranks its own image r-th: the r images after i
# score higher. Every other caption ranks 0.
CAPTION_RANKS = {(1, 0): 2, **{(2, k): 5 for k in range(5)}, (3, 0): 8, (0, 5): 11}
NUM_IMAGES = 12


class CaptionModel:
    """Image i embeds as the one-hot e_i; caption (i, k) as 0.5 e_i plus 0.9 - 0.01 m on the
    images i + 1 + m, m < CAPTION_RANKS[(i, k)]."""

    vision_config = {"image_size": SIZE}

    @staticmethod
    def tokenize(texts):
        return np.array([[int(w) + 1 for w in t.split()[1::2]] for t in texts], np.int32)

    def encode_image(self, images):
        return keras.ops.convert_to_tensor(
            np.eye(NUM_IMAGES, dtype=np.float32)[pixel_codes(images)[0]]
        )

    def encode_text(self, ids):
        out = np.zeros((len(ids), NUM_IMAGES), np.float32)
        for row, (image, caption) in enumerate(np.asarray(ids) - 1):
            out[row, image] = 0.5
            for m in range(CAPTION_RANKS.get((image, caption), 0)):
                out[row, (image + 1 + m) % NUM_IMAGES] = 0.9 - 0.01 * m
        return keras.ops.convert_to_tensor(out)


def karpathy_folder(root, layout, size=11):
    """A Karpathy-format data set of 12 test images with 5 captions each (image 0 has a 6th)
    and two images of other splits."""
    folder = "coco" if layout == "coco" else "flickr30k"
    images = []
    for i in range(NUM_IMAGES + 2):
        split = "test" if i < NUM_IMAGES else ("train" if i == NUM_IMAGES else "restval")
        count = 6 if i == 0 else 5
        entry = {
            "filename": f"{1000 + i}.jpg",
            "split": split,
            "sentences": [{"raw": f"photo {i} caption {k} ", "tokens": []} for k in range(count)],
        }
        if layout == "coco":
            entry["filepath"] = "val2014"
            image_path = os.path.join(root, "coco", "val2014", entry["filename"])
        else:
            image_path = os.path.join(root, "flickr30k", "flickr30k-images", entry["filename"])
        write_png(image_path, coded_image(i % NUM_IMAGES, size=size))  # PNG bytes, .jpg name
        images.append(entry)
    name = "dataset_coco.json" if layout == "coco" else "dataset_flickr30k.json"
    with open(os.path.join(root, folder, name), "w") as handle:
        json.dump({"images": images, "dataset": folder}, handle)
    return os.path.join(root, folder, name)


@pytest.mark.parametrize("layout", ["coco", "flickr30k"])
def test_karpathy_retrieval_known_answer(tmp_path, layout):
    karpathy_folder(str(tmp_path), layout)
    run = suites.SUITES[layout]
    report = run(
        CaptionModel(), str(tmp_path), tokenizer=CaptionModel.tokenize, batch_size=5, verbose=0
    )
    # Image ranks (wrong captions above the best own one): 0 0 1 6 6 6 6 6 1 1 1 1.
    # Caption ranks: 53 captions 0, one 2, five 5, one 8.
    assert report["metrics"] == pytest.approx(
        {
            "i2t_recall@1": 2 / 12,
            "i2t_recall@5": 7 / 12,
            "i2t_recall@10": 1.0,
            "t2i_recall@1": 53 / 60,
            "t2i_recall@5": 54 / 60,
            "t2i_recall@10": 1.0,
        }
    )
    assert report["settings"]["num_images"] == 12 and report["settings"]["num_captions"] == 60
    # Every caption: image 0's sixth ranks 11 and puts itself above images 1-11, whose ranks
    # become 0 1 2 7 7 7 7 7 2 2 2 2.
    report = run(
        CaptionModel(), str(tmp_path), tokenizer=CaptionModel.tokenize, max_captions=None, verbose=0
    )
    assert report["settings"]["num_captions"] == 61
    assert report["metrics"] == pytest.approx(
        {
            "i2t_recall@1": 1 / 12,
            "i2t_recall@5": 7 / 12,
            "i2t_recall@10": 1.0,
            "t2i_recall@1": 53 / 61,
            "t2i_recall@5": 54 / 61,
            "t2i_recall@10": 60 / 61,
        }
    )


def test_karpathy_layout_errors(tmp_path):
    model = CaptionModel()
    with pytest.raises(FileNotFoundError, match="Flickr30k Karpathy 1k test not found") as error:
        suites.SUITES["flickr30k"](model, str(tmp_path), tokenizer=model.tokenize)
    assert "dataset_flickr30k.json" in str(error.value)
    assert "caption_datasets.zip" in str(error.value)
    with pytest.raises(FileNotFoundError, match="COCO Karpathy 5k test not found") as error:
        suites.SUITES["coco"](model, str(tmp_path), tokenizer=model.tokenize)
    assert "TFDS 'coco_captions' split 'test'" in str(error.value)
    path = karpathy_folder(str(tmp_path), "flickr30k")
    os.remove(os.path.join(str(tmp_path), "flickr30k", "flickr30k-images", "1003.jpg"))
    with pytest.raises(FileNotFoundError, match="1 of the 12 test images"):
        suites.SUITES["flickr30k"](model, str(tmp_path), tokenizer=model.tokenize)
    os.remove(os.path.join(str(tmp_path), "flickr30k", "flickr30k-images", "1000.jpg"))
    with pytest.raises(FileNotFoundError, match="The images of .*dataset_flickr30k.json not found"):
        suites.SUITES["flickr30k"](model, str(tmp_path), tokenizer=model.tokenize)
    with open(path, "w") as handle:
        json.dump({"images": [{"filename": "a.jpg", "split": "test"}]}, handle)
    with pytest.raises(ValueError, match="image entry 0 lacks 'sentences'"):
        suites.SUITES["flickr30k"](model, str(tmp_path), tokenizer=model.tokenize)
    with pytest.raises(ValueError, match="max_captions must be"):
        suites.SUITES["flickr30k"](model, str(tmp_path), tokenizer=model.tokenize, max_captions=0)


def test_coco_captions_from_a_tfds_mock(tmp_path):
    class AnyCaptions(CaptionModel):
        def encode_image(self, images):
            assert images.shape[1:] == (SIZE, SIZE, 3)
            return super().encode_image(np.zeros_like(images))

        @staticmethod
        def tokenize(texts):
            return np.ones((len(texts), 2), np.int32)

    with tfds.testing.mock_data(num_examples=4, num_sub_examples=5):
        report = suites.SUITES["coco"](
            AnyCaptions(), str(tmp_path), tokenizer=AnyCaptions.tokenize, batch_size=3, verbose=0
        )
    assert report["settings"]["source"] == "tfds:coco_captions/test"
    assert report["settings"]["num_images"] == 4
    assert set(report["metrics"]) == {f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}


# ------------------------------------------------------------------ images
def test_resizing_squashes_or_crops_the_centre():
    columns = np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 30, (4, 1, 3))  # (4, 8, 3)
    cropped = data.prepare_image(columns, 4, "center_crop").numpy()
    np.testing.assert_array_equal(cropped[0, :, 0], [60, 90, 120, 150])  # columns 2..5
    squashed = data.prepare_image(columns, 4, "squash").numpy()
    assert squashed.shape == (4, 4, 3) and squashed.dtype == np.uint8
    assert squashed[0, 0, 0] < squashed[0, -1, 0]  # every column range kept, squeezed
    grey = data.prepare_image(np.full((5, 5, 1), 7, np.uint8), 3).numpy()
    np.testing.assert_array_equal(grey, np.full((3, 3, 3), 7))
    rgba = data.prepare_image(np.full((3, 3, 4), 9, np.uint8), None).numpy()
    assert rgba.shape == (3, 3, 3)


# ------------------------------------------------------------------ report
def test_run_suites_writes_the_report_and_checks_every_data_set_first(tmp_path):
    root = str(tmp_path / "data")
    karpathy_folder(root, "flickr30k")
    write_cifar_python(
        os.path.join(root, "cifar-10-batches-py", "test_batch"),
        cifar_images(CIFAR_CODED),
        CIFAR_LABELS,
        b"labels",
    )
    model, output = cifar_model(prompts.CIFAR10_CLASS_NAMES), str(tmp_path / "report")
    with pytest.raises(FileNotFoundError, match="COCO Karpathy 5k test not found"):
        evaluation.run_suites(model, "cifar10,coco", root, output, tokenizer=model.tokenize)
    assert model.num_prompts == 0  # the missing data set stopped the run before any work
    with pytest.raises(ValueError, match="options for suites that are not run"):
        evaluation.run_suites(model, "cifar10", root, output, options={"coco": {}})
    report = evaluation.run_suites(
        model,
        ["cifar10"],
        root,
        output,
        tokenizer=model.tokenize,
        verbose=0,
        options={"cifar10": {"resize": "center_crop"}},
    )
    assert report["suites"]["cifar10"]["metrics"]["top1"] == pytest.approx(5 / 6)
    assert report["suites"]["cifar10"]["settings"]["resize"] == "center_crop"
    report = evaluation.run_suites(
        CaptionModel(),
        "flickr30k",
        root,
        output,
        tokenizer=CaptionModel.tokenize,
        verbose=0,
        model_name="fake",
    )
    with open(os.path.join(output, "report.json")) as handle:
        assert json.load(handle) == report
    assert report["model"] == "fake" and report["backend"] == keras.backend.backend()
    assert report["suites"]["flickr30k"]["metrics"]["i2t_recall@5"] == pytest.approx(7 / 12)
    with open(os.path.join(output, "report.md")) as handle:
        text = handle.read()
    assert "| flickr30k | Flickr30k Karpathy 1k test | i2t_recall@5 | 58.33 |" in text
    assert "- num_captions: 60" in text
    assert not os.path.exists(os.path.join(output, "flickr30k"))  # no pictures, no folder


# ------------------------------------------------------------------ command line
def test_cli_evaluates_suites_end_to_end(tmp_path, capsys):
    from conftest import tiny_model

    from keras_silc.data import SilcTokenizer

    root = str(tmp_path / "data")
    karpathy_folder(root, "flickr30k", size=32)  # the model's size: resizing changes nothing
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    write_cifar_python(
        os.path.join(root, "cifar-10-batches-py", "test_batch"), images, CIFAR_LABELS, b"labels"
    )
    texts = [f"photo {i} caption {k}" for i in range(12) for k in range(5)]
    texts += [t.format(n) for n in prompts.CIFAR10_CLASS_NAMES for t in prompts.CIFAR_TEMPLATES]
    words = sorted({w.strip(".") for text in texts for w in text.lower().split()})
    vocabulary = str(tmp_path / "vocabulary.txt")
    with open(vocabulary, "w") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[EOS]", ".", *words]) + "\n")
    path, model = str(tmp_path / "model.keras"), tiny_model()
    model.save(path)  # without a tokenizer: --tokenizer gives it one
    output = str(tmp_path / "eval")
    args = ["evaluate", path, "--data-dir", root, "--output", output, "--batch-size", "64"]
    args += ["--tokenizer", vocabulary]
    assert cli.main([*args, "--suite", "cifar10,flickr30k", "--quiet"]) == 0
    assert "report.md" in capsys.readouterr().out
    with open(os.path.join(output, "report.json")) as handle:
        report = json.load(handle)
    assert list(report["suites"]) == ["cifar10", "flickr30k"]
    # The command's numbers are the library's on the same images (already at the model's size).
    tokenizer = SilcTokenizer.from_file(vocabulary, 16)
    expected = evaluation.retrieval(
        model,
        tokenizer,
        np.stack([coded_image(i, size=32) for i in range(12)]),
        [[f"photo {i} caption {k}" for k in range(5)] for i in range(12)],
    )
    assert report["suites"]["flickr30k"]["metrics"] == pytest.approx(expected)
    expected = evaluation.zero_shot_classification(
        model, tokenizer, images, CIFAR_LABELS, prompts.CIFAR10_CLASS_NAMES, prompts.CIFAR_TEMPLATES
    )
    assert report["suites"]["cifar10"]["metrics"] == pytest.approx(expected)
    with open(os.path.join(output, "report.md")) as handle:
        assert "| cifar10 | CIFAR-10 test | top1 |" in handle.read()
    # Errors end with a message and exit code 2, before the model is loaded.
    assert cli.main([*args, "--suite", "imagenet21k"]) == 2
    assert "Unknown suite(s) ['imagenet21k']" in capsys.readouterr().err
    assert cli.main([*args, "--suite", "coco"]) == 2
    assert "COCO Karpathy 5k test not found" in capsys.readouterr().err
    assert cli.main(["evaluate", path, "--suite", "coco", "--output", output]) == 2
    assert "--suite needs --data-dir" in capsys.readouterr().err
    assert cli.main([*args, "--suite", "cifar10", "--source", "tfds"]) == 2
    assert "TFDS 'cifar10' split 'test'" in capsys.readouterr().err
    # Suite flags without --suite were ignored (the Fashion evaluation ran, exit 0).
    assert cli.main(args) == 2
    assert "--data-dir, --batch-size, --tokenizer act only with --suite" in capsys.readouterr().err
    assert cli.main([*args, "--suite", " "]) == 2
    assert "--suite is empty" in capsys.readouterr().err
    assert cli.main([*args, "--suite", "cifar10", "--eval-items", "5"]) == 2
    assert "--eval-items set the Fashion-MNIST evaluation" in capsys.readouterr().err


def test_cli_model_sources_are_told_apart_as_init_from_does(tmp_path):
    import keras_hub
    from test_interop import _keras_hub_preset

    with pytest.raises(ValueError, match="No saved model at 'runs/missing.keras'"):
        cli.load_two_tower("runs/missing.keras")
    with pytest.raises(FileNotFoundError, match="MODEL 'runs/missing': no such folder"):
        cli.load_two_tower("runs/missing")
    # A keras-hub CLIP preset brings its byte-pair tokenizer.
    preset = _keras_hub_preset("clip", tmp_path / "clip")
    model, tokenizer = cli.load_two_tower(preset)
    assert tokenizer is None and model.tokenizer is not None and model.teacher is None
    # Its backbone saved alone: refused without --tokenizer, loaded with one.
    bare = str(tmp_path / "bare")
    keras_hub.models.Backbone.from_preset(preset).save_to_preset(bare)
    with pytest.raises(FileNotFoundError, match=re.escape(f"MODEL {bare!r}") + ".*no tokenizer"):
        cli.load_two_tower(bare)
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("\n".join(["[PAD]", "[UNK]", "[EOS]", "red", "bag"]))
    model, tokenizer = cli.load_two_tower(bare, str(vocabulary))
    assert model.tokenizer is None and not tokenizer.pad_with_end_token
    assert np.asarray(tokenizer(["red bag"])).shape == (1, model.text_encoder.max_length)


def test_cli_loads_a_keras_hub_siglip_preset_folder_with_its_tokenizer(tmp_path):
    import keras_hub
    import sentencepiece

    tower = {"num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32}
    backbone = keras_hub.models.SigLIPBackbone(
        keras_hub.models.SigLIPVisionEncoder(patch_size=8, image_shape=(16, 16, 3), **tower),
        keras_hub.models.SigLIPTextEncoder(
            vocabulary_size=50, embedding_dim=16, max_sequence_length=8, **tower
        ),
    )
    words = "cat dog bird fish frog horse ship truck".split()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([f"a photo of a {w}" for w in words] * 8),
        model_prefix=str(tmp_path / "spm"),
        vocab_size=14,
        model_type="word",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    keras_hub.models.SigLIPTokenizer(proto=str(tmp_path / "spm.model")).save_to_preset(preset)
    model, tokenizer = cli.load_two_tower(preset)
    assert tokenizer is None  # the model's own, from the preset
    ids = np.asarray(model.tokenizer(["a photo of a cat"]))
    assert ids.shape == (1, 8) and list(ids[0, -3:]) == [1, 1, 1]  # SigLIP pads with </s>
    images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(backbone.get_vision_embeddings(images * 2 - 1))
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.encode_image(images)), expected, atol=1e-5
    )
    assert model.teacher is None  # evaluation builds no teacher
