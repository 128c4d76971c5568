"""The Table 2 segmentation suite: class lists, label formats, the folder readers, and the
sliding window against a direct numpy implementation of mmseg's `slide_inference`."""

import os

import keras
import numpy as np
import pytest
from conftest import hash_tokenizer
from conftest import tiny_model
from PIL import Image

from keras_silc.evaluation import sliding_window as sw
from keras_silc.evaluation.suites import segmentation as suite
from keras_silc.evaluation.suites import segmentation_classes as names


# ------------------------------------------------------------------------ test doubles
class PatchModel:
    """Knows the answer per pixel: a pixel of value v in [0, 1] is class rint(v * 25.5)
    (class k is stored as the grey level 10 k). Dense features are the one-hot classes
    average-pooled over `patch` x `patch` patches, so where a window starts changes them."""

    def __init__(self, patch=1, classes=None, dim=256):
        self.vision_config = {"image_size": None, "patch_size": patch}
        self.patch, self.dim, self.calls = patch, dim, []
        self.prompts = {}
        for index, name in enumerate(classes or ()):
            for template in names.TCL_TEMPLATES:
                self.prompts[template.format(name)] = index + 1

    def tokenizer(self, texts):
        return np.array([[self.prompts.get(t, 0)] for t in texts], np.int32)

    def encode_text(self, ids):
        ids = np.asarray(ids)[:, 0]
        return keras.ops.convert_to_tensor(np.eye(self.dim, dtype=np.float32)[ids - 1])

    def dense_image_features(self, images, source=None):
        images = np.asarray(images)
        self.calls.append(images.shape)
        n, h, w, _ = images.shape
        p = self.patch
        classes = np.clip(np.rint(images[..., 0] * 25.5).astype(int), 0, self.dim - 1)
        one_hot = np.eye(self.dim, dtype=np.float32)[classes]
        pooled = one_hot.reshape(n, h // p, p, w // p, p, self.dim).mean(axis=(2, 4))
        return keras.ops.convert_to_tensor(pooled)


def scene(class_map):
    """An (h, w, 3) uint8 image showing `class_map` (class k as grey level 10 k)."""
    return np.repeat((np.asarray(class_map) * 10).astype(np.uint8)[..., None], 3, axis=-1)


# --------------------------------------------------------------- numpy reference (mmseg)
def np_resize(x, size):
    """Bilinear (h, w, C) -> (size, C), half-pixel centres, clamped: F.interpolate's
    align_corners=False, written as gathers."""

    def axis(x, out, ax):
        n = x.shape[ax]
        src = np.clip((np.arange(out) + 0.5) * n / out - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        shape = [1] * x.ndim
        shape[ax] = out
        frac = (src - lo).reshape(shape)
        return np.take(x, lo, ax) * (1 - frac) + np.take(x, hi, ax) * frac

    return axis(axis(x, size[0], 0), size[1], 1)


def reference_slide(model, image, classes, out_size, crop, stride, shift=0):
    """mmseg's slide_inference, one window at a time; `shift` moves every window's left edge
    right by that many pixels (a misplaced window) except the first, keeping it inside."""
    image = image.astype(np.float32) / 255.0
    h, w = image.shape[:2]
    preds = np.zeros((h, w, len(classes)))
    count = np.zeros((h, w, 1))
    h_grids = max(h - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    w_grids = max(w - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    p = model.patch
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride[0], w_idx * stride[1]
            y2, x2 = min(y1 + crop[0], h), min(x1 + crop[1], w)
            y1, x1 = max(y2 - crop[0], 0), max(x2 - crop[1], 0)
            if shift and x1 > 0 and x2 + shift <= w:
                x1, x2 = x1 + shift, x2 + shift
            window = image[y1:y2, x1:x2]
            ph, pw = -(-window.shape[0] // p) * p, -(-window.shape[1] // p) * p
            window = np.pad(window, [(0, ph - window.shape[0]), (0, pw - window.shape[1]), (0, 0)])
            features = np.asarray(
                keras.ops.convert_to_numpy(model.dense_image_features(window[None]))
            )
            scores = features[0] @ classes.T
            preds[y1:y2, x1:x2] += np_resize(scores, (ph, pw))[: y2 - y1, : x2 - x1]
            count[y1:y2, x1:x2] += 1
    return np_resize(preds / count, out_size)


# ------------------------------------------------------------------------- class lists
def test_class_lists_are_tcls():
    assert len(names.ADE20K_CLASSES) == 150
    assert names.ADE20K_CLASSES[:3] == ("wall", "building", "sky")
    assert names.ADE20K_CLASSES[7] == "bed "  # mmseg's trailing space, kept
    assert names.ADE20K_CLASSES[-1] == "flag"
    assert len(names.PASCAL_CONTEXT_59_CLASSES) == 59
    assert names.PASCAL_CONTEXT_59_CLASSES[0] == "aeroplane"
    assert names.PASCAL_CONTEXT_59_CLASSES[-1] == "wood"
    assert names.PASCAL_CONTEXT_59_CLASSES[39] == "pottedplant"
    assert names.CITYSCAPES_CLASSES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle",
    )  # fmt: skip
    assert len(names.PASCAL_VOC_20_CLASSES) == 20
    assert names.PASCAL_VOC_20_CLASSES[10] == "diningtable"
    assert names.PASCAL_VOC_20_CLASSES[-1] == "tvmonitor"
    assert len(names.COCO_STUFF_171_CLASSES) == 171
    assert names.COCO_STUFF_171_CLASSES[0] == "person"
    assert names.COCO_STUFF_171_CLASSES[79] == "toothbrush"
    assert names.COCO_STUFF_171_CLASSES[80] == "banner"
    assert names.COCO_STUFF_171_CLASSES[-1] == "wood"
    for classes in (names.ADE20K_CLASSES, names.COCO_STUFF_171_CLASSES):
        assert len(set(classes)) == len(classes)
    assert len(names.TCL_TEMPLATES) == 9 and names.TCL_TEMPLATES[-1] == "a photo of {}s."
    for key, spec in suite.DATASETS.items():
        assert spec.key == key and len(spec.class_names) in (150, 59, 19, 20, 171)


def test_label_formats_map_to_train_ids():
    maps = suite.LABEL_MAPS
    # ADE20K / Pascal: 0 (other, background) is not scored, v -> v - 1, 255 stays 255.
    np.testing.assert_array_equal(
        maps["reduce_zero"][[0, 1, 2, 150, 254, 255]], [255, 0, 1, 149, 253, 255]
    )
    # Cityscapes label ids (cityscapesScripts): road 7 -> 0, car 26 -> 13, bicycle 33 -> 18;
    # unlabeled 0, parking 9, guard rail 14, caravan 29 are void.
    city = maps["cityscapes_ids"]
    np.testing.assert_array_equal(
        city[[7, 8, 11, 23, 24, 26, 31, 33]], [0, 1, 2, 10, 11, 13, 16, 18]
    )
    np.testing.assert_array_equal(city[[0, 1, 6, 9, 10, 14, 29, 30, 34, 255]], [255] * 10)
    assert sorted(city[city != 255]) == list(range(19))
    # COCO-Stuff stuffthingmaps: entries of mmseg's clsID_to_trID table.
    coco = maps["coco_stuff_ids"]
    table = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 30: 26, 43: 39, 45: 40, 64: 59,
             66: 60, 69: 61, 71: 62, 81: 72, 83: 73, 89: 79, 91: 80, 92: 81, 181: 170, 255: 255}  # fmt: skip
    np.testing.assert_array_equal(coco[list(table)], list(table.values()))
    np.testing.assert_array_equal(
        coco[[11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182]], [255] * 12
    )


def test_palette_pngs_give_indices_not_colours(tmp_path):
    indices = np.array([[0, 1, 2], [15, 255, 20]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(voc_palette())
    image.save(tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    import tensorflow as tf

    pixels = tf.io.decode_png(data, channels=0).numpy()
    assert pixels.shape[-1] == 3  # TF returns the palette's colours
    ids = suite.label_ids(data, pixels, suite.LABEL_MAPS["identity"])
    np.testing.assert_array_equal(ids, indices)
    grey = tmp_path / "l.png"
    Image.fromarray(indices, mode="L").save(grey)
    pixels = tf.io.decode_png(grey.read_bytes(), channels=0).numpy()
    ids = suite.label_ids(grey.read_bytes(), pixels, suite.LABEL_MAPS["reduce_zero"])
    np.testing.assert_array_equal(ids, [[255, 0, 1], [14, 255, 19]])


# ------------------------------------------------------------------------ the protocol
def test_tcl_resize_and_windows_follow_mmcv_and_mmseg():
    assert sw.rescaled_size(512, 683) == (448, 598)  # ADE20K's usual size: 683 * 0.875 + 0.5
    assert sw.rescaled_size(1024, 2048) == (448, 896)  # Cityscapes
    assert sw.rescaled_size(375, 500) == (448, 597)  # Pascal: 500 * 448 / 375 = 597.33
    assert sw.rescaled_size(100, 1000) == (205, 2048)  # the long side caps the factor at 2.048
    assert sw.window_boxes(448, 598) == ([(0, 448)], [(0, 448), (150, 598)])
    assert sw.window_boxes(448, 896) == ([(0, 448)], [(0, 448), (224, 672), (448, 896)])
    assert sw.window_boxes(300, 200) == ([(0, 300)], [(0, 200)])  # smaller than a window
    with pytest.raises(ValueError, match="crop_size"):
        sw.window_boxes(10, 10, crop_size=(0, 4))


@pytest.mark.parametrize("shape", [(13, 7), (5, 29), (16, 16)])
def test_resize_matrices_are_keras_bilinear_resize(shape):
    x = np.random.default_rng(0).random((1, 9, 11, 2)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(
        keras.ops.image.resize(x, shape, interpolation="bilinear", antialias=False)
    )[0]
    got = np.einsum(
        "hi,ijc,wj->hwc", sw.resize_matrix(9, shape[0]), x[0], sw.resize_matrix(11, shape[1])
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np_resize(x[0], shape), expected, atol=1e-5)


def blocks(rng, shape, cell, num_classes):
    grid = rng.integers(0, num_classes, (-(-shape[0] // cell), -(-shape[1] // cell)))
    return grid.repeat(cell, 0).repeat(cell, 1)[: shape[0], : shape[1]]


def test_sliding_window_is_mmseg_slide_inference():
    """Logits equal a direct numpy slide_inference (windows, padding to the patch, bilinear
    upsampling, averaging, resize to the label size) for images of several sizes whose
    windows share batches; windows misplaced by one pixel give other labels."""
    rng = np.random.default_rng(0)
    model = PatchModel(patch=4)
    classes = np.eye(256, dtype=np.float32)[:6]
    crop, stride = (12, 12), (8, 8)
    cases = [  # (image size, label size): big, odd, smaller than a window (other padding)
        ((22, 35), (30, 47)),
        ((25, 19), (25, 19)),
        ((10, 30), (7, 41)),
        ((22, 35), (15, 20)),
    ]
    examples = [{"image": scene(blocks(rng, size, 3, 6)), "out_size": out} for size, out in cases]
    outputs = list(
        sw.slide_inference(
            model, examples, classes, crop_size=crop, stride=stride, batch_size=5, logits=True
        )
    )
    labels = list(
        sw.slide_inference(model, examples, classes, crop_size=crop, stride=stride, batch_size=3)
    )
    assert [o[0] for o in outputs] == examples  # in order, examples passed through
    assert {shape[0] for shape in model.calls} <= {1, 2, 3, 4, 5}
    misplaced_differ = False
    for (example, logits), (_, label) in zip(outputs, labels, strict=True):
        expected = reference_slide(
            model, example["image"], classes, example["out_size"], crop, stride
        )
        assert logits.shape == (*example["out_size"], 6)
        np.testing.assert_allclose(logits, expected, atol=1e-5)
        top2 = np.sort(expected, axis=-1)
        clear = top2[..., -1] - top2[..., -2] > 1e-4
        np.testing.assert_array_equal(label[clear], expected.argmax(-1)[clear])
        shifted = reference_slide(
            model, example["image"], classes, example["out_size"], crop, stride, shift=1
        )
        misplaced_differ |= bool(np.any(shifted.argmax(-1)[clear] != label[clear]))
        assert label.dtype == np.int32
    assert misplaced_differ


def test_windows_are_batched_across_images():
    model = PatchModel(patch=1)
    classes = np.eye(256, dtype=np.float32)[:3]
    examples = [{"image": scene(np.zeros((8, 12), int))} for _ in range(3)]  # 2 windows each
    results = list(
        sw.slide_inference(model, examples, classes, crop_size=8, stride=4, batch_size=4)
    )
    assert len(results) == 3 and all(r[1].shape == (8, 12) for r in results)
    assert model.calls == [(4, 8, 8, 3), (2, 8, 8, 3)]  # 6 windows: 4, then 2
    model.calls.clear()
    list(
        sw.slide_inference(
            model, examples[:2] + examples[:1], classes, crop_size=8, stride=4, batch_size=8
        )
    )
    assert model.calls == [(8, 8, 8, 3)]  # 6 windows, zero-padded to a power of two
    with pytest.raises(ValueError, match="batch_size"):
        list(sw.slide_inference(model, examples, classes, batch_size=0))
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        list(sw.slide_inference(model, [{"image": np.zeros((4, 4))}], classes))


# ------------------------------------------------------------------- fake folder trees
def voc_palette():
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


SHOWN = np.array(  # the class each pixel shows (train ids), 16 x 24
    [[0] * 8 + [1] * 8 + [2] * 8] * 8 + [[3] * 12 + [4] * 12] * 8
)
TRUTH = SHOWN.copy()
TRUTH[:4, :4] = 255  # not scored, whatever is predicted
TRUTH[12:, :4] = 4  # 4 x 4 pixels of class 4 that show class 3
# Expected IoU: 0, 1, 2 exact; 3: 80 / (96 - 16) -> 80 / 96; 4: 96 / 112.
EXPECTED_IOU = {0: 1.0, 1: 1.0, 2: 1.0, 3: 80 / 96, 4: 96 / 112}


def write(path, array, mode="L", palette=None, image_format="PNG"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(array).astype(np.uint8), mode=mode)
    if palette:
        image.putpalette(palette)
    image.save(path, format=image_format)  # PNG bytes even in a .jpg: lossless fakes


def make_tree(root, name):
    """A 2-image validation split of `name` in its release layout; labels from TRUTH."""
    image = scene(SHOWN)
    raw = np.where(TRUTH == 255, 0, TRUTH + 1)  # reduce_zero formats
    if name == "ade20k":
        base = os.path.join(root, "ADEChallengeData2016")
        for stem in ("ADE_val_00000001", "ADE_val_00000002"):
            write(f"{base}/images/validation/{stem}.jpg", image, "RGB")
            write(f"{base}/annotations/validation/{stem}.png", raw)
    elif name in ("pascal_context", "pascal_voc"):
        year, labels, split = (
            ("VOC2010", "SegmentationClassContext", "SegmentationContext")
            if name == "pascal_context"
            else ("VOC2012", "SegmentationClass", "Segmentation")
        )
        base = os.path.join(root, "VOCdevkit", year)
        os.makedirs(f"{base}/ImageSets/{split}")
        with open(f"{base}/ImageSets/{split}/val.txt", "w") as f:
            f.write("2008_000001\n2008_000002\n")
        for stem in ("2008_000001", "2008_000002"):
            write(f"{base}/JPEGImages/{stem}.jpg", image, "RGB")
            if name == "pascal_voc":  # indexed colours, 255 on object boundaries
                write(
                    f"{base}/{labels}/{stem}.png",
                    np.where(TRUTH == 255, 255, TRUTH + 1),
                    "P",
                    voc_palette(),
                )
            else:
                write(f"{base}/{labels}/{stem}.png", raw)
    elif name == "cityscapes":
        to_id = {t: i for i, t in names.CITYSCAPES_ID_TO_TRAIN_ID.items()}
        ids = np.vectorize(lambda t: to_id.get(t, 0))(TRUTH)
        base = os.path.join(root, "cityscapes")
        for stem, train_ids in (("aachen_000000_000019", False), ("aachen_000001_000019", True)):
            write(f"{base}/leftImg8bit/val/aachen/{stem}_leftImg8bit.png", image, "RGB")
            if train_ids:  # cityscapesscripts' output is used where present
                write(f"{base}/gtFine/val/aachen/{stem}_gtFine_labelTrainIds.png", TRUTH)
                write(f"{base}/gtFine/val/aachen/{stem}_gtFine_labelIds.png", np.zeros_like(ids))
            else:
                write(f"{base}/gtFine/val/aachen/{stem}_gtFine_labelIds.png", ids)
    elif name == "coco_stuff":
        used = [i for i in range(182) if i not in names.COCO_STUFF_UNUSED_IDS]
        ids = np.where(TRUTH == 255, 255, np.array(used)[np.minimum(TRUTH, 170)])
        base = os.path.join(root, "coco_stuff164k")
        for stem in ("000000000139", "000000000285"):
            write(f"{base}/images/val2017/{stem}.jpg", image, "RGB")
            write(f"{base}/annotations/val2017/{stem}.png", ids)


SMALL = {"image_scale": (24, 16), "crop_size": 16, "stride": 8}  # no resize, 2 windows


@pytest.mark.parametrize(
    "name", ["ade20k", "pascal_context", "cityscapes", "pascal_voc", "coco_stuff"]
)
def test_each_folder_layout_is_read_and_scored(tmp_path, name):
    make_tree(str(tmp_path), name)
    spec = suite.DATASETS[name]
    model = PatchModel(classes=spec.class_names)
    run = getattr(suite, f"run_{name}")
    report = run(model, str(tmp_path), tokenizer=model.tokenizer, verbose=0, batch_size=3, **SMALL)
    assert report["settings"]["num_examples"] == 2 and report["data"] == spec.title
    for index, iou in EXPECTED_IOU.items():
        assert report["per_class_iou"][spec.class_names[index]] == pytest.approx(iou)
    assert report["metrics"]["miou"] == pytest.approx(np.mean(list(EXPECTED_IOU.values())))
    absent = [c for i, c in enumerate(spec.class_names) if i not in EXPECTED_IOU]
    assert all(report["per_class_iou"][c] is None for c in absent)
    scored = (TRUTH != 255).sum()
    assert report["metrics"]["pixel_accuracy"] == pytest.approx((scored - 16) / scored)
    settings = report["settings"]
    assert settings["num_classes"] == len(spec.class_names) and settings["ignore_index"] == 255
    assert settings["source"].startswith("folder:")
    assert run.locate(str(tmp_path))[0] == "folder"


def test_defaults_are_tcls_and_pictures_are_drawn(tmp_path):
    make_tree(str(tmp_path), "pascal_voc")
    model = tiny_model()
    report = suite.run_pascal_voc(
        model, str(tmp_path), tokenizer=hash_tokenizer(), verbose=0, max_examples=1,
        output_dir=str(tmp_path / "out"), batch_size=2,
    )  # fmt: skip
    settings = report["settings"]
    assert settings["image_scale"] == [2048, 448] and settings["crop_size"] == [448, 448]
    assert settings["stride"] == [224, 224] and settings["templates"] == list(names.TCL_TEMPLATES)
    assert settings["num_examples"] == 1 and 0.0 <= report["metrics"]["miou"] <= 1.0
    assert len(report["pictures"]) == 1 and os.path.getsize(report["pictures"][0]) > 1000


def test_without_matplotlib_the_numbers_come_without_pictures(tmp_path, monkeypatch):
    make_tree(str(tmp_path), "ade20k")
    model = PatchModel(classes=suite.DATASETS["ade20k"].class_names)
    find_spec = suite.importlib.util.find_spec
    monkeypatch.setattr(
        suite.importlib.util, "find_spec", lambda n: None if n == "matplotlib" else find_spec(n)
    )
    report = suite.run_ade20k(
        model, str(tmp_path), tokenizer=model.tokenizer, verbose=0, output_dir=str(tmp_path / "o"),
        **SMALL,
    )  # fmt: skip
    assert report["pictures"] == [] and "keras-silc[plots]" in report["settings"]["pictures"]
    assert report["metrics"]["miou"] == pytest.approx(np.mean(list(EXPECTED_IOU.values())))


def test_suites_share_the_runner_s_interface():
    import inspect

    for name in suite.DATASETS:
        run = getattr(suite, f"run_{name}")
        parameters = inspect.signature(run).parameters
        assert list(parameters)[:2] == ["model", "data_dir"]
        for key in ("tokenizer", "batch_size", "max_examples", "output_dir", "verbose", "source"):
            assert parameters[key].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters["batch_size"].default == 16 and callable(run.locate)


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="ADE20K-150 not found") as error:
        suite.run_ade20k(PatchModel(), str(tmp_path), verbose=0)
    with pytest.raises(FileNotFoundError, match="ADE20K-150 not found"):
        suite.run_ade20k.locate(str(tmp_path))
    assert "ADEChallengeData2016.zip" in str(error.value)
    assert os.path.join(str(tmp_path), "ADEChallengeData2016") in str(error.value)
    make_tree(str(tmp_path), "pascal_voc")
    os.remove(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2008_000002.png")
    with pytest.raises(FileNotFoundError, match="2008_000002.png"):
        suite.dataset_files("pascal_voc", str(tmp_path))
    with pytest.raises(ValueError, match="TFDS has no"):
        suite.load_dataset("pascal_voc", str(tmp_path), source="tfds")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        suite.load_dataset("ade20k", str(tmp_path / "nowhere"))


def test_labels_outside_the_classes_are_errors_and_255_is_ignored(tmp_path):
    make_tree(str(tmp_path), "ade20k")
    spec = suite.DATASETS["ade20k"]
    model = PatchModel(classes=spec.class_names)
    label = tmp_path / "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png"
    write(str(label), np.full((16, 24), 255))  # 255 stays 255: nothing scored in it
    report = suite.run_ade20k(model, str(tmp_path), tokenizer=model.tokenizer, verbose=0, **SMALL)
    assert report["metrics"]["miou"] == pytest.approx(np.mean(list(EXPECTED_IOU.values())))
    write(str(label), np.full((16, 24), 201))  # class 200 of 150
    with pytest.raises(ValueError, match=r"label values \[200\]"):
        suite.run_ade20k(model, str(tmp_path), tokenizer=model.tokenizer, verbose=0, **SMALL)


def test_cityscapes_reads_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    spec = suite.DATASETS["cityscapes"]
    model = PatchModel(patch=8, classes=spec.class_names)
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        report = suite.run_cityscapes(
            model, "/", tokenizer=model.tokenizer, verbose=0, source="tfds",
            image_scale=(64, 32), crop_size=32, stride=16, max_examples=1,
        )  # fmt: skip
    assert report["settings"]["num_examples"] == 1
    assert report["settings"]["source"].startswith("tfds:")
    assert 0.0 <= report["metrics"]["miou"] <= 1.0
    # Random label ids: the void ones are not scored, the 19 classes are.
    assert sum(v is not None for v in report["per_class_iou"].values()) == 19


def test_slide_inference_refuses_windows_and_sizes_it_cannot_score():
    class EmbeddingModel(PatchModel):  # says its embedding width, as a SilcModel does
        class text_encoder:
            embedding_dim = 256

    model, classes = EmbeddingModel(), np.eye(256, dtype=np.float32)[:3]
    image = scene(np.zeros((40, 56), int))

    def run(examples=({"image": image},), classes=classes, **windows):
        return list(sw.slide_inference(model, list(examples), classes, **windows))

    # Windows every 32 pixels, 16 wide, left pixels that no window scores (they read class 0).
    with pytest.raises(ValueError, match=r"stride \(32, 32\) is larger than crop_size \(16, 16\)"):
        run(crop_size=16, stride=32)
    with pytest.raises(ValueError, match=r"stride \(8, 17\) is larger than crop_size"):
        sw.window_boxes(40, 56, crop_size=(16, 16), stride=(8, 17))
    with pytest.raises(ValueError, match="stride must be a positive int"):
        run(crop_size=16, stride=(0, 8))
    with pytest.raises(ValueError, match="crop_size must be a positive int"):
        run(crop_size=-16, stride=8)
    with pytest.raises(
        ValueError, match="7-wide class embeddings.*embeds in 256.*class_embeddings"
    ):
        run(classes=np.ones((2, 7)), crop_size=16, stride=8)
    with pytest.raises(ValueError, match=r"classes must be \(C, J\)"):
        run(classes=np.ones((0, 256)), crop_size=16, stride=8)
    with pytest.raises(ValueError, match=r"h, w >= 1; got shape \(0, 8, 3\)"):
        run([{"image": np.zeros((0, 8, 3), np.uint8)}], crop_size=16, stride=8)
    with pytest.raises(ValueError, match="'out_size' must be a positive int.*got \\(0, 0\\)"):
        run([{"image": image, "out_size": (0, 0)}], crop_size=16, stride=8)
    # Windows as wide as their stride cover every pixel once.
    ((_, labels),) = run(crop_size=16, stride=16)
    assert labels.shape == (40, 56)
