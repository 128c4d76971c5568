"""Where the benchmarks' data sets live on disk, and tf.data pipelines that stream them.

Every reader looks in `data_dir` only and downloads nothing. Two kinds of source:

- the standard folder layouts users keep (ImageNet's validation images sorted into synset
  folders, CIFAR's "python version" archives, the Karpathy caption JSON beside the images);
- TensorFlow Datasets, read with `tfds.builder(name, data_dir=data_dir).as_dataset(...)`
  (`download_and_prepare` is never called: prepare the data once with `tfds build`).

A data set found nowhere is a `FileNotFoundError` that lists every place looked at and says how
to get the data.

The pipelines yield single examples (`{"image": uint8 (S, S, 3), ...}`) with a known cardinality;
the evaluators batch them. Images are resized as big_vision's `resize(S)` does ("squash":
bilinear, no antialiasing, truncated back to uint8) or as CLIP / open_clip's eval transform
does ("center_crop": the shorter side to S, bicubic with antialiasing, then the central S x S).
"""

import json
import os
import pickle
import typing

import numpy as np

from keras_silc.extras import require

RESIZE_METHODS = ("squash", "center_crop")
SOURCES = ("auto", "folder", "tfds")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp")
# Padding for captions read from TFDS with max_captions=None (COCO has at most 7 per image).
_TFDS_CAPTION_SLOTS = 16


def _tf():
    import tensorflow as tf

    return tf


# ------------------------------------------------------------------------- images
def check_resize(resize):
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize={resize!r}: use one of {RESIZE_METHODS}.")
    return resize


def prepare_image(image, size, resize="squash"):
    """A (H, W, C) image tensor -> uint8 (size, size, 3); unchanged in size when size is None."""
    tf = _tf()
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    channels = image.shape[-1]
    if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 4:
        image = image[..., :3]
    if size is None:
        return tf.cast(image, tf.uint8)
    if resize == "squash":
        image = tf.image.resize(image, (size, size), method="bilinear", antialias=False)
        return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    scale = size / tf.minimum(height, width)
    new_height = tf.maximum(size, tf.cast(height * scale, tf.int32))
    new_width = tf.maximum(size, tf.cast(width * scale, tf.int32))
    image = tf.image.resize(image, (new_height, new_width), method="bicubic", antialias=True)
    top = tf.cast(tf.round(tf.cast(new_height - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_width - size, tf.float32) / 2.0), tf.int32)
    image = image[top : top + size, left : left + size]
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, (size, size, 3))


def read_image(path):
    """A uint8 (H, W, 3) tensor of an image file (JPEG, PNG, BMP or GIF's first frame)."""
    tf = _tf()
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def finish(dataset, count, max_examples):
    """`dataset` cut to `max_examples`, with its cardinality asserted."""
    tf = _tf()
    if max_examples is not None:
        count = min(count, max_examples)
        dataset = dataset.take(count)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset.prefetch(tf.data.AUTOTUNE), count


def check_max_examples(max_examples):
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(f"max_examples must be None or a positive int, got {max_examples!r}.")
    return max_examples


class Located(typing.NamedTuple):
    """A data set found on disk: where (`source`), how many examples (None: unknown) and
    `build(size, resize)` -> a tf.data.Dataset of single examples."""

    source: str
    count: int | None
    build: typing.Callable


def first_existing(data_dir, candidates, kind="file"):
    """The first of `data_dir/candidate` that exists (a file or a folder), else None."""
    test = os.path.isfile if kind == "file" else os.path.isdir
    for candidate in candidates:
        path = os.path.join(data_dir, candidate)
        if test(path):
            return path
    return None


# ------------------------------------------------------------------------- errors
class NotFound(FileNotFoundError):
    """A data set that is in none of the places looked at."""

    def __init__(self, what, looked, how_to):
        self.looked = list(looked)
        places = "\n".join(f"  - {place}" for place in self.looked)
        super().__init__(
            f"{what} not found. Looked for:\n{places}\nHow to get it: {how_to} Nothing is "
            "downloaded automatically."
        )


def check_data_dir(data_dir):
    if data_dir is None:
        raise ValueError("data_dir is required: the folder that holds the data sets.")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data_dir {data_dir!r} is not a folder. Pass the folder that holds the data sets "
            "(see docs/evaluation.md for the layout)."
        )
    return data_dir


def check_source(source):
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: use one of {SOURCES}.")
    return source


# ------------------------------------------------------------------------- TFDS
def tfds_dataset(name, split, data_dir):
    """(dataset of raw elements, number of examples or None, "tfds:name/split") of a prepared
    TFDS data set; a `LookupError` naming the place looked at (and why) when it is not there."""
    tfds = require("tensorflow_datasets")
    place = f"TFDS {name!r} split {split!r} prepared under {data_dir}"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except (AssertionError, ValueError, KeyError, FileNotFoundError) as error:
        reason = str(error).split(". ")[0]
        raise LookupError(f"{place} ({reason})") from None
    count = int(dataset.cardinality())
    return dataset, (count if count >= 0 else None), f"tfds:{name}/{split}"


# ------------------------------------------------------------------ class folders
def class_folder_files(root):
    """(paths, labels, class folder names): images in the sorted class subfolders of `root`
    (label = the folder's index in sorted order: for ImageNet's synset ids, TFDS's order)."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        files = sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(os.path.join(folder, f) for f in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, np.int64), classes


def image_folder_dataset(paths, labels, size, resize):
    tf = _tf()
    dataset = tf.data.Dataset.from_tensor_slices({"path": list(paths), "label": labels})
    return dataset.map(
        lambda e: {
            "image": prepare_image(read_image(e["path"]), size, resize),
            "label": e["label"],
        },
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


# ------------------------------------------------------------------ CIFAR python
def read_cifar_python(path, label_key):
    """(images uint8 (N, 32, 32, 3), labels (N,)) of a CIFAR "python version" batch file."""
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[label_key], np.int64)
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as error:
        raise ValueError(
            f"{path!r} is not a CIFAR python batch with b'data' and {label_key!r}: {error!r}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(
            f"{path!r}: expected b'data' of shape (N, 3072) and N labels, got {data.shape} and "
            f"{labels.shape}."
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def array_dataset(images, labels, size, resize):
    tf = _tf()
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    return dataset.map(
        lambda e: {"image": prepare_image(e["image"], size, resize), "label": e["label"]},
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


# ------------------------------------------------------------------ Karpathy JSON
def read_karpathy(json_path, split="test", max_captions=5):
    """[(relative image path, [captions])] of one split of a Karpathy caption JSON
    (`dataset_coco.json`, `dataset_flickr30k.json`): the path is `filepath/filename` (COCO)
    or `filename` (Flickr30k); the captions are the sentences' `raw` text, the first
    `max_captions` (None: all)."""
    try:
        with open(json_path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{json_path!r} is not valid JSON: {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise ValueError(
            f"{json_path!r} is not a Karpathy caption file: it needs an 'images' list of "
            "{'filename', 'split', 'sentences': [{'raw': ...}]} entries."
        )
    entries = []
    for index, image in enumerate(payload["images"]):
        try:
            if image["split"] != split:
                continue
            relative = os.path.join(image.get("filepath", ""), image["filename"])
            captions = [str(s["raw"]).strip() for s in image["sentences"]]
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"{json_path!r}: image entry {index} lacks {error} (each needs 'filename', "
                "'split' and 'sentences' with 'raw' text)."
            ) from None
        captions = [c for c in captions if c][:max_captions]
        if not captions:
            raise ValueError(f"{json_path!r}: image {relative!r} has no caption.")
        entries.append((relative, captions))
    if not entries:
        splits = sorted({str(image.get("split")) for image in payload["images"]})
        raise ValueError(f"{json_path!r} has no image in split {split!r} (splits: {splits}).")
    return entries


def caption_dataset(paths, captions, size, resize):
    """Single examples {"image", "caption": (C,) str, "" padded} of image files."""
    tf = _tf()
    slots = max(len(c) for c in captions)
    padded = np.array([c + [""] * (slots - len(c)) for c in captions], dtype=object)
    dataset = tf.data.Dataset.from_tensor_slices({"path": list(paths), "caption": padded})
    return dataset.map(
        lambda e: {
            "image": prepare_image(read_image(e["path"]), size, resize),
            "caption": e["caption"],
        },
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def tfds_caption_dataset(dataset, size, resize, max_captions):
    """Single examples {"image", "caption"} of TFDS `coco_captions`-style elements."""
    tf = _tf()
    slots = max_captions or _TFDS_CAPTION_SLOTS

    def convert(element):
        captions = tf.reshape(element["captions"]["text"], [-1])[:slots]
        captions = tf.concat([captions, tf.fill([slots], "")], 0)[:slots]
        return {
            "image": prepare_image(element["image"], size, resize),
            "caption": tf.ensure_shape(captions, [slots]),
        }

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
