"""The paper's Table 2: zero-shot semantic segmentation on ADE20K-150, Pascal Context-59,
Cityscapes (19 classes), Pascal VOC-20 and COCO-Stuff-171, evaluated as TCL evaluates them
(kakaobrain/tcl `segmentation/configs/_base_/datasets/*.py`, mmsegmentation 0.27):

- every image is resized keeping its aspect ratio to at most 2048 x 448 px (the short side
  becomes 448 px), bilinearly (mmcv's `imrescale`);
- sliding-window inference, 448 x 448 windows every 224 px, overlapping logits averaged
  (mmseg's `slide_inference`, `keras_silc.evaluation.sliding_window`), resized to the label's
  size; the logits are the cosine similarities of the dense features and the prompt-averaged
  class embeddings (`keras_silc.evaluation.segmentation`), TCL's nine "custom" prompts;
- no background class: labels use train ids 0..C-1 and 255 for "not scored" (ADE20K's
  "other", Pascal's background and boundaries, Cityscapes' void classes, COCO-Stuff's
  unlabeled pixels); the prediction is the argmax over the C classes;
- no post-refinement (no PAMR, no CRF); one confusion matrix over the data set, IoU per class,
  mIoU over the classes present in the truth or the predictions (mmseg's `nanmean`).

Each `run_<data set>(model, data_dir, ...)` reads the standard folder layout under `data_dir`
(or TFDS where TFDS has the data set: Cityscapes) and returns a report dict. Nothing is
downloaded: a missing data set raises FileNotFoundError saying where it was looked for and how
to get it. The folder layouts are in docs/evaluation_segmentation.md.
"""

import dataclasses
import glob
import importlib.util
import logging
import os
import time

import numpy as np
import tensorflow as tf

from keras_silc.evaluation.common import progress
from keras_silc.evaluation.segmentation import confusion_matrix
from keras_silc.evaluation.segmentation import iou_from_confusion
from keras_silc.evaluation.sliding_window import TCL_CROP_SIZE
from keras_silc.evaluation.sliding_window import TCL_IMAGE_SCALE
from keras_silc.evaluation.sliding_window import TCL_STRIDE
from keras_silc.evaluation.sliding_window import rescaled_size
from keras_silc.evaluation.sliding_window import size_pair
from keras_silc.evaluation.sliding_window import slide_inference
from keras_silc.evaluation.suites import segmentation_classes as names
from keras_silc.evaluation.zero_shot import class_embeddings
from keras_silc.extras import require

logger = logging.getLogger("keras_silc.evaluation")

IGNORE_INDEX = 255


# --------------------------------------------------------------------------- label ids
def _label_maps():
    """Lookup tables (256,) uint8: a label PNG's pixel value -> train id or 255."""
    identity = np.arange(256, dtype=np.uint8)
    # mmseg's reduce_zero_label: 0 (background / "other") -> 255, v -> v - 1, 255 stays.
    reduce_zero = np.concatenate([[255], np.arange(255)]).astype(np.uint8)
    reduce_zero[255] = 255
    cityscapes = np.full(256, 255, np.uint8)
    for label_id, train_id in names.CITYSCAPES_ID_TO_TRAIN_ID.items():
        cityscapes[label_id] = train_id
    coco_stuff = np.full(256, 255, np.uint8)
    used = [i for i in range(182) if i not in names.COCO_STUFF_UNUSED_IDS]
    coco_stuff[used] = np.arange(len(used))
    return {
        "identity": identity,
        "reduce_zero": reduce_zero,
        "cityscapes_ids": cityscapes,
        "coco_stuff_ids": coco_stuff,
    }


# Pixel value -> train id (255: not scored), per label format.
LABEL_MAPS = _label_maps()


def _png_palette(data):
    """The (n, 3) uint8 palette of an indexed-colour PNG, None for any other PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 26 or data[25] != 3:
        return None  # IHDR's colour type (byte 25) is 3 for palette images
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"PLTE":
            palette = data[position + 8 : position + 8 + length]
            return np.frombuffer(palette, np.uint8).reshape(-1, 3)
        position += 12 + length
    raise ValueError("An indexed-colour PNG without a palette (PLTE chunk).")


def label_ids(data, pixels, label_map):
    """(H, W) uint8 train ids of a label PNG: its bytes `data`, its decoded (H, W, c) uint8
    `pixels` and a (256,) lookup table from `LABEL_MAPS`.

    Palette PNGs (Pascal VOC's SegmentationClass) hold class indices, which
    `tf.io.decode_png` turns into the palette's colours: the colours are mapped back to
    their indices here (the first index of a colour, as the palette lists them)."""
    pixels = np.asarray(pixels)
    palette = _png_palette(bytes(data))
    if palette is None:
        indices = pixels[..., 0]
    else:
        weights = np.array([65536, 256, 1])
        keys = palette.astype(np.int64) @ weights
        colours = pixels[..., :3].astype(np.int64) @ weights
        unique, first = np.unique(keys, return_index=True)
        position = np.clip(np.searchsorted(unique, colours), 0, len(unique) - 1)
        if np.any(unique[position] != colours):
            raise ValueError("A palette PNG holds a colour that its palette does not list.")
        indices = first[position]
    return np.asarray(label_map)[indices].astype(np.uint8)


# ---------------------------------------------------------------------- data sets
@dataclasses.dataclass(frozen=True)
class SegmentationDataset:
    """One Table 2 data set: its classes and where its files are.

    Attributes:
        key: the suite's name ("ade20k").
        title: the name in reports ("ADE20K-150").
        class_names: the C class names, in train-id order.
        roots: folders tried under `data_dir`, in order ("" is `data_dir` itself).
        markers: paths a root must contain.
        how_to_get: what to download and where to put it.
        tfds: None, or (TFDS name, split, image key, label key, `LABEL_MAPS` key).
    """

    key: str
    title: str
    class_names: tuple
    roots: tuple
    markers: tuple
    how_to_get: str
    tfds: tuple | None = None


def _validation_pairs(root, image_glob, label_for):
    pairs = []
    for image in sorted(glob.glob(os.path.join(root, *image_glob))):
        pairs.append((image, *label_for(image)))
    return pairs


def _split_pairs(root, split_file, image_dir, label_dir, label_map):
    with open(os.path.join(root, split_file)) as f:
        ids = [line.strip() for line in f if line.strip()]
    return [
        (
            os.path.join(root, image_dir, f"{i}.jpg"),
            os.path.join(root, label_dir, f"{i}.png"),
            label_map,
        )
        for i in ids
    ]


def _first_existing(*candidates):
    """The first (path, label map) whose path exists, else the last (reported as missing)."""
    for path, label_map in candidates:
        if os.path.exists(path):
            return path, label_map
    return candidates[-1]


def _ade20k_files(root):
    def label(image):
        stem = os.path.splitext(os.path.basename(image))[0]
        return os.path.join(root, "annotations", "validation", f"{stem}.png"), "reduce_zero"

    return _validation_pairs(root, ("images", "validation", "*.jpg"), label)


def _pascal_context_files(root):
    return _split_pairs(
        root,
        os.path.join("ImageSets", "SegmentationContext", "val.txt"),
        "JPEGImages",
        "SegmentationClassContext",
        "reduce_zero",
    )


def _pascal_voc_files(root):
    return _split_pairs(
        root,
        os.path.join("ImageSets", "Segmentation", "val.txt"),
        "JPEGImages",
        "SegmentationClass",
        "reduce_zero",
    )


def _cityscapes_files(root):
    suffix = "_leftImg8bit.png"

    def label(image):
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.join(root, "gtFine", "val", city, os.path.basename(image)[: -len(suffix)])
        return _first_existing(
            (f"{stem}_gtFine_labelTrainIds.png", "identity"),
            (f"{stem}_gtFine_labelIds.png", "cityscapes_ids"),
        )

    return _validation_pairs(root, ("leftImg8bit", "val", "*", f"*{suffix}"), label)


def _coco_stuff_files(root):
    def label(image):
        stem = os.path.join(
            root, "annotations", "val2017", os.path.splitext(os.path.basename(image))[0]
        )
        return _first_existing(
            (f"{stem}_labelTrainIds.png", "identity"), (f"{stem}.png", "coco_stuff_ids")
        )

    return _validation_pairs(root, ("images", "val2017", "*.jpg"), label)


_MMSEG_PREPARE = "https://mmsegmentation.readthedocs.io/en/0.x/dataset_prepare.html"

DATASETS = {
    "ade20k": SegmentationDataset(
        key="ade20k",
        title="ADE20K-150",
        class_names=names.ADE20K_CLASSES,
        roots=("ADEChallengeData2016", os.path.join("ade", "ADEChallengeData2016"), ""),
        markers=(os.path.join("images", "validation"), os.path.join("annotations", "validation")),
        how_to_get=(
            "Download ADEChallengeData2016.zip (http://data.csail.mit.edu/places/ADEchallenge/"
            "ADEChallengeData2016.zip) and unzip it into DATA_DIR."
        ),
    ),
    "pascal_context": SegmentationDataset(
        key="pascal_context",
        title="Pascal Context-59",
        class_names=names.PASCAL_CONTEXT_59_CLASSES,
        roots=(os.path.join("VOCdevkit", "VOC2010"), "VOC2010", ""),
        markers=(
            "JPEGImages",
            "SegmentationClassContext",
            os.path.join("ImageSets", "SegmentationContext", "val.txt"),
        ),
        how_to_get=(
            "Untar VOCtrainval_03-May-2010.tar (Pascal VOC 2010) into DATA_DIR, then make the "
            "59-class labels (VOC2010/SegmentationClassContext/*.png, 0 = background) and "
            "ImageSets/SegmentationContext/val.txt from the Detail API's trainval_merged.json "
            f"with mmsegmentation's tools/convert_datasets/pascal_context.py ({_MMSEG_PREPARE})."
        ),
    ),
    "cityscapes": SegmentationDataset(
        key="cityscapes",
        title="Cityscapes",
        class_names=names.CITYSCAPES_CLASSES,
        roots=("cityscapes", ""),
        markers=(os.path.join("leftImg8bit", "val"), os.path.join("gtFine", "val")),
        how_to_get=(
            "Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
            "https://www.cityscapes-dataset.com (an account is needed) and unzip both into "
            "DATA_DIR/cityscapes (gtFine's *_labelIds.png are mapped to the 19 train ids; "
            "*_labelTrainIds.png are used where present). Or prepare TFDS's "
            "cityscapes/semantic_segmentation from the same zips with data_dir=DATA_DIR."
        ),
        tfds=(
            "cityscapes/semantic_segmentation",
            "validation",
            "image_left",
            "segmentation_label",
            "cityscapes_ids",
        ),
    ),
    "pascal_voc": SegmentationDataset(
        key="pascal_voc",
        title="Pascal VOC-20",
        class_names=names.PASCAL_VOC_20_CLASSES,
        roots=(os.path.join("VOCdevkit", "VOC2012"), "VOC2012", ""),
        markers=(
            "JPEGImages",
            "SegmentationClass",
            os.path.join("ImageSets", "Segmentation", "val.txt"),
        ),
        how_to_get=(
            "Download VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/"
            "voc2012/) and untar it into DATA_DIR (it makes VOCdevkit/VOC2012)."
        ),
    ),
    "coco_stuff": SegmentationDataset(
        key="coco_stuff",
        title="COCO-Stuff-171",
        class_names=names.COCO_STUFF_171_CLASSES,
        roots=("coco_stuff164k", "coco_stuff", ""),
        markers=(os.path.join("images", "val2017"), os.path.join("annotations", "val2017")),
        how_to_get=(
            "Unzip COCO's val2017.zip (http://images.cocodataset.org/zips/val2017.zip) into "
            "DATA_DIR/coco_stuff164k/images and COCO-Stuff's stuffthingmaps_trainval2017.zip "
            "(https://github.com/nightrome/cocostuff) into DATA_DIR/coco_stuff164k/annotations "
            "(the maps are mapped to the 171 train ids; mmsegmentation's *_labelTrainIds.png "
            "are used where present)."
        ),
    ),
}

_FILES = {
    "ade20k": _ade20k_files,
    "pascal_context": _pascal_context_files,
    "cityscapes": _cityscapes_files,
    "pascal_voc": _pascal_voc_files,
    "coco_stuff": _coco_stuff_files,
}


def _dataset_spec(name):
    if name not in DATASETS:
        raise ValueError(f"Unknown segmentation data set {name!r}; choose from {list(DATASETS)}.")
    return DATASETS[name]


def find_root(name, data_dir):
    """(root folder or None, [where it was looked for, and what was missing there])."""
    spec = _dataset_spec(name)
    tried = []
    for sub in spec.roots:
        root = os.path.join(data_dir, sub) if sub else data_dir
        missing = [m for m in spec.markers if not os.path.exists(os.path.join(root, m))]
        if not missing:
            return root, tried
        tried.append(f"{os.path.abspath(root)} (no {missing[0]})")
    return None, tried


def dataset_files(name, data_dir):
    """[(image path, label path, `LABEL_MAPS` key)] of a data set's validation split in its
    folder layout under `data_dir`; FileNotFoundError when it is not there."""
    spec = _dataset_spec(name)
    root, tried = find_root(name, data_dir)
    if root is None:
        raise FileNotFoundError(
            f"{spec.title} not found under {os.path.abspath(data_dir)}; looked in: "
            f"{'; '.join(tried)}. {spec.how_to_get} Nothing is downloaded automatically."
        )
    files = _FILES[name](root)
    if not files:
        raise FileNotFoundError(f"{spec.title}: no validation images under {root}.")
    missing = [
        path for image, label, _ in files for path in (image, label) if not os.path.exists(path)
    ]
    if missing:
        raise FileNotFoundError(
            f"{spec.title} under {root} misses {len(missing)} file(s), e.g. {missing[:3]}. "
            f"{spec.how_to_get}"
        )
    return files


def _rescale(image, scale):
    """mmcv's keep-ratio bilinear resize (`rescaled_size`), rounded back to uint8."""
    shape = tf.shape(image)

    def size(height, width):
        return np.array(rescaled_size(int(height), int(width), scale), np.int32)

    new_size = tf.numpy_function(size, [shape[0], shape[1]], tf.int32, stateful=False)
    new_size.set_shape([2])
    resized = tf.image.resize(image, new_size, method="bilinear", antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _folder_dataset(files, scale):
    keys = sorted(LABEL_MAPS)
    tables = np.stack([LABEL_MAPS[k] for k in keys])
    images, labels, maps = zip(*files, strict=True)
    dataset = tf.data.Dataset.from_tensor_slices(
        {
            "image_path": list(images),
            "label_path": list(labels),
            "label_map": [keys.index(m) for m in maps],
        }
    )

    def load(example):
        image = tf.io.decode_image(
            tf.io.read_file(example["image_path"]), channels=3, expand_animations=False
        )
        data = tf.io.read_file(example["label_path"])
        pixels = tf.io.decode_png(data, channels=0)
        label = tf.numpy_function(
            lambda d, p, m: label_ids(d, p, tables[m]),
            [data, pixels, example["label_map"]],
            tf.uint8,
            stateful=False,
        )
        label.set_shape([None, None])
        return {"image": _rescale(image, scale), "label": label, "name": example["image_path"]}

    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _tfds_dataset(spec, data_dir, scale):
    tfds = require("tensorflow_datasets")
    name, split, image_key, label_key, label_map = spec.tfds
    builder = tfds.builder(name, data_dir=data_dir)
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except (AssertionError, FileNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"TFDS's {name} is not prepared in {os.path.abspath(data_dir)} ({error}). "
            f"{spec.how_to_get}"
        ) from error
    table = tf.constant(LABEL_MAPS[label_map])

    def load(example):
        label = tf.gather(table, tf.cast(example[label_key][..., 0], tf.int32))
        name_ = example.get("image_id", tf.constant(name))
        return {"image": _rescale(example[image_key], scale), "label": label, "name": name_}

    try:
        total = builder.info.splits[split].num_examples or None
    except (KeyError, ValueError):
        total = None
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE), total


_SOURCES = ("auto", "folder", "tfds")


def locate(name, data_dir, source="auto"):
    """Where a data set's validation split is: ("folder", root) or ("tfds", data_dir), after
    checking that every file is there; FileNotFoundError (saying where it looked and how to
    get the data) when it is not.

    Args:
        name: a key of `DATASETS`.
        data_dir: the folder holding the data set (see docs/evaluation_segmentation.md).
        source: "auto" (the folder layout, else a prepared TFDS copy in `data_dir`), "folder"
            or "tfds" (Cityscapes only: TFDS has none of the others with their labels).
    """
    spec = _dataset_spec(name)
    source = source or "auto"
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}.")
    if source == "tfds" and spec.tfds is None:
        raise ValueError(
            f"TFDS has no {spec.title} with its segmentation labels: use source='folder'."
        )
    if data_dir is None or not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} is not a folder. {spec.how_to_get}")
    if source == "tfds":
        return "tfds", data_dir
    root = find_root(name, data_dir)[0]
    if root is None and source == "auto" and spec.tfds is not None:
        if _tfds_prepared(spec, data_dir):
            return "tfds", data_dir
    dataset_files(name, data_dir)  # raises, saying where it looked, when files are missing
    return "folder", root


def load_dataset(name, data_dir, source="auto", image_scale=TCL_IMAGE_SCALE):
    """A data set's validation split as (tf.data.Dataset, where it came from, number of
    images or None). The dataset yields {"image": (h, w, 3) uint8 resized for inference,
    "label": (H, W) uint8 train ids with 255 = not scored, "name": tf.string}.

    Args:
        name, data_dir, source: see `locate`.
        image_scale: the keep-ratio resize (TCL: (2048, 448)).
    """
    spec = _dataset_spec(name)
    kind, where = locate(name, data_dir, source)
    if kind == "tfds":
        dataset, total = _tfds_dataset(spec, data_dir, image_scale)
        return dataset, f"tfds:{spec.tfds[0]}/{spec.tfds[1]} in {os.path.abspath(where)}", total
    files = dataset_files(name, data_dir)
    return _folder_dataset(files, image_scale), f"folder:{os.path.abspath(where)}", len(files)


def _tfds_prepared(spec, data_dir):
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return False
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(spec.tfds[0], data_dir=data_dir).is_prepared()
    except Exception:  # an unknown or broken builder is "not there"
        return False


# --------------------------------------------------------------------------- the suite
def _check_labels(label, num_classes, name, title):
    bad = (label != IGNORE_INDEX) & (label >= num_classes)
    if np.any(bad):
        values = sorted({int(v) for v in np.unique(label[bad])})[:8]
        raise ValueError(
            f"{title}: {name} holds label values {values}, neither class ids in "
            f"[0, {num_classes}) nor {IGNORE_INDEX} (not scored). Is it this data set's "
            "label file, in the format docs/evaluation_segmentation.md describes?"
        )


def _save_pictures(pictures, class_names, output_dir, key):
    """One PNG per kept image: image | prediction | ground truth, classes present only."""
    if not pictures or output_dir is None:
        return [], None
    if importlib.util.find_spec("matplotlib") is None:
        note = 'matplotlib is not installed: pip install "keras-silc[plots]" for pictures'
        logger.warning("%s.", note)
        return [], note
    from keras_silc.evaluation.plots import plot_segmentation

    paths = []
    for index, (image, prediction, label, name) in enumerate(pictures):
        present = np.union1d(np.unique(prediction), np.unique(label[label != IGNORE_INDEX]))
        lookup = np.zeros(256, np.int64)  # train id -> 1..k, 255 -> 0 (uncoloured)
        lookup[present] = np.arange(1, len(present) + 1)
        path = os.path.join(output_dir, f"{key}_{index:02d}.png")
        plot_segmentation(
            image[None],
            lookup[prediction][None],
            lookup[label][None],
            [class_names[c].strip() for c in present],
            path,
            captions=[os.path.basename(name)],
        )
        paths.append(path)
    return paths, None


def run_segmentation(
    name,
    model,
    data_dir,
    *,
    tokenizer=None,
    batch_size=16,
    max_examples=None,
    output_dir=None,
    verbose=1,
    source="auto",
    dense_source=None,
    templates=names.TCL_TEMPLATES,
    image_scale=TCL_IMAGE_SCALE,
    crop_size=TCL_CROP_SIZE,
    stride=TCL_STRIDE,
    num_pictures=4,
):
    """Zero-shot segmentation of one Table 2 data set (`name`: a key of `DATASETS`)."""
    spec = _dataset_spec(name)
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 1):
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples!r}.")
    dataset, origin, total = load_dataset(name, data_dir, source, image_scale)
    if max_examples is not None:
        dataset = dataset.take(max_examples)
        total = max_examples if total is None else min(total, max_examples)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    class_names = list(spec.class_names)
    num_classes = len(class_names)
    classes = class_embeddings(model, tokenizer, class_names, templates)
    confusion = np.zeros((num_classes, num_classes), np.int64)

    def examples():
        for example in dataset.as_numpy_iterator():
            label = example["label"]
            yield {
                "image": example["image"],
                "out_size": label.shape,
                "label": label,
                "name": example["name"].decode("utf-8", "replace"),
            }

    bar = progress(total, verbose, "image")
    pictures, count = [], 0
    start = time.perf_counter()
    for example, prediction in slide_inference(
        model,
        examples(),
        classes,
        crop_size=crop_size,
        stride=stride,
        source=dense_source,
        batch_size=batch_size,
    ):
        label = example["label"]
        _check_labels(label, num_classes, example["name"], spec.title)
        confusion += confusion_matrix(label, prediction, num_classes, ignore=IGNORE_INDEX)
        if len(pictures) < num_pictures and output_dir is not None:
            pictures.append((example["image"], prediction, label, example["name"]))
        count += 1
        if bar is not None:
            bar.add(1)
    seconds = time.perf_counter() - start
    if count == 0:
        raise ValueError(f"{spec.title}: no images to evaluate in {origin}.")
    if confusion.sum() == 0:
        raise ValueError(f"{spec.title}: no labelled pixels (every label is {IGNORE_INDEX}).")
    iou = iou_from_confusion(confusion)
    picture_paths, picture_note = _save_pictures(pictures, class_names, output_dir, spec.key)
    crop_size, stride = size_pair(crop_size, "crop_size"), size_pair(stride, "stride")
    report = {
        "task": "zero-shot segmentation",
        "data": spec.title,
        "metrics": {
            "miou": float(np.nanmean(iou)),
            "pixel_accuracy": float(np.trace(confusion) / confusion.sum()),
        },
        "per_class_iou": {
            c: (None if np.isnan(v) else float(v)) for c, v in zip(class_names, iou, strict=True)
        },
        "settings": {
            "source": origin,
            "num_examples": count,
            "max_examples": max_examples,
            "num_classes": num_classes,
            "protocol": "TCL (kakaobrain/tcl segmentation configs): no background class, "
            "no post-refinement",
            "image_scale": list(image_scale),
            "resize": "keep aspect ratio, bilinear (mmcv imrescale)",
            "mode": "slide",
            "crop_size": list(crop_size),
            "stride": list(stride),
            "logits": "cosine(dense features, prompt-averaged class embeddings), overlapping "
            "windows averaged, bilinear resize to the label size, argmax",
            "dense_source": dense_source or "default (map_values with a MAP head, else tokens)",
            "templates": list(templates),
            "ignore_index": IGNORE_INDEX,
            "windows_per_batch": batch_size,
        },
        "pictures": picture_paths,
        "seconds": round(seconds, 2),
        "images_per_second": round(count / seconds, 3) if seconds > 0 else None,
    }
    if picture_note:
        report["settings"]["pictures"] = picture_note
    return report


_ARGS = """

    Args:
        model: a two-tower model (`SilcModel`, a converted keras-hub / Hugging Face SigLIP or
            CLIP): anything with `encode_text` and `dense_image_features`.
        data_dir: the folder that holds the data set (docs/evaluation_segmentation.md).
        tokenizer: a callable from a list of str to (N, T) token ids; None for the model's.
        batch_size: 448 px windows per model call (the windows of consecutive images share a
            batch).
        max_examples: evaluate only the first N images (a quick check, not the protocol).
        output_dir: where overlay pictures of the first `num_pictures` images go (needs
            matplotlib: pip install "keras-silc[plots]"); None for none.
        verbose: a progress bar when truthy.
        source: "auto" (the folder layout, else a prepared TFDS copy), "folder" or "tfds".
        dense_source: the dense features: "map_values" (the paper), "tokens" or None (see
            `keras_silc.evaluation.segment`).
        templates: the prompt templates averaged per class (TCL's nine "custom" ones).
        image_scale, crop_size, stride: TCL's resize (2048, 448) and 448 px windows every
            224 px; change them only to study the protocol.
        num_pictures: how many of the first images get an overlay picture.

    Returns:
        {"task", "data", "metrics": {"miou", "pixel_accuracy"}, "per_class_iou": {class: IoU,
        or None for a class neither in the truth nor predicted}, "settings": {...},
        "pictures": [paths], "seconds", "images_per_second"}. IoUs are fractions in [0, 1]
        (the paper prints percentages).
    """


def _suite(name, doc):
    def run(
        model,
        data_dir,
        *,
        tokenizer=None,
        batch_size=16,
        max_examples=None,
        output_dir=None,
        verbose=1,
        source="auto",
        dense_source=None,
        templates=names.TCL_TEMPLATES,
        image_scale=TCL_IMAGE_SCALE,
        crop_size=TCL_CROP_SIZE,
        stride=TCL_STRIDE,
        num_pictures=4,
    ):
        return run_segmentation(
            name,
            model,
            data_dir,
            tokenizer=tokenizer,
            batch_size=batch_size,
            max_examples=max_examples,
            output_dir=output_dir,
            verbose=verbose,
            source=source,
            dense_source=dense_source,
            templates=templates,
            image_scale=image_scale,
            crop_size=crop_size,
            stride=stride,
            num_pictures=num_pictures,
        )

    run.__name__ = run.__qualname__ = f"run_{name}"
    run.__doc__ = doc + _ARGS
    run.locate = lambda data_dir, source="auto": locate(name, data_dir, source)
    return run


run_ade20k = _suite(
    "ade20k", "Zero-shot mIoU on ADE20K-150 (ADEChallengeData2016 validation, 2000 images)."
)
run_pascal_context = _suite(
    "pascal_context",
    "Zero-shot mIoU on Pascal Context-59 (VOC2010 SegmentationContext val, 5105 images).",
)
run_cityscapes = _suite(
    "cityscapes", "Zero-shot mIoU on Cityscapes, 19 classes (gtFine val, 500 images)."
)
run_pascal_voc = _suite(
    "pascal_voc",
    "Zero-shot mIoU on Pascal VOC-20 (VOC2012 Segmentation val, 1449 images; background not "
    "scored).",
)
run_coco_stuff = _suite(
    "coco_stuff", "Zero-shot mIoU on COCO-Stuff-171 (COCO 2017 val, 5000 images)."
)
