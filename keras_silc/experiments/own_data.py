"""Training on one's own image-text pairs: the readers behind `keras-silc train --data`, the
captions the tokenizer learns from, and the validation behind `--val-data`: retrieval on the
user's validation pairs, and zero-shot classification when class names are given.

Zero-shot classes: `--val-class-names FILE` lists one class name per line (line i is class
i). An image's class comes from `--val-label-key` when given (a WebDataset `.cls` file or
`.json` field, a TFRecord feature, a CSV column, a TFDS field): an integer label is a line
number of the file (from 0), any other label a class name. Without a label key, the class is
the image's first caption, which must then be a class name (a data set of images captioned
with their class). Class names match without regard to case or surrounding spaces.
"""

import functools

import numpy as np

from keras_silc import storage

SOURCES = ("fashion_scenes", "webdataset", "tfrecord", "csv", "tfds")
# The captions a vocabulary is trained on, by default (the first ones in the reader's order).
TOKENIZER_SAMPLE = 100_000


def read_pairs(source, path, image_key=None, caption_key=None, label_key=None, seed=0, split=None):
    """The pairs dataset of a `--data` source other than fashion_scenes.

    Args:
        source: "webdataset", "tfrecord", "csv" or "tfds".
        path: its shards, files, table, or TFDS name.
        image_key, caption_key, label_key: the fields (None: the reader's defaults, no
            label); columns of a CSV table.
        seed: the order of the shards / files (the same seed, the same order).
        split: the TFDS split (default "train"); only for tfds.
    """
    from keras_silc import data

    if source not in SOURCES[1:]:
        raise ValueError(f"Unknown --data {source!r}: use {', '.join(SOURCES)}.")
    if split is not None and source != "tfds":
        raise ValueError(f"split= is for tfds sources, not {source}.")
    if source == "csv":
        keys = {"image_column": image_key, "caption_column": caption_key}
        keys["label_column"] = label_key
    else:
        keys = {"image_key": image_key, "caption_key": caption_key, "label_key": label_key}
    keys = {name: value for name, value in keys.items() if value is not None}
    if source == "webdataset":
        return data.from_webdataset(path, seed=seed, **keys)
    if source == "tfrecord":
        return data.from_tfrecord(path, seed=seed, **keys)
    if source == "csv":
        return data.from_csv(path, **keys)
    return data.from_tfds(path, split=split or "train", seed=seed, **keys)


def caption_sample(pairs, count):
    """The first `count` non-empty captions of `pairs` (all captions of each image, images
    in the dataset's order): what a vocabulary is trained on."""
    captions = []
    for element in pairs.as_numpy_iterator():
        captions.extend(c.decode("utf-8") for c in np.ravel(element["caption"]) if c)
        if len(captions) >= count:
            break
    return captions[:count]


def read_class_names(path):
    """The class names of a file, one per line (blank lines skipped); a clear error for a
    missing file, an empty one or a name listed twice."""
    if not storage.exists(path):
        raise FileNotFoundError(
            f"--val-class-names: no file at {path!r}; give a text file with one class name "
            "per line."
        )
    names = [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]
    if not names:
        raise ValueError(f"--val-class-names: {path!r} lists no class names (one per line).")
    seen = {}
    for index, name in enumerate(names):
        if name.lower() in seen:
            raise ValueError(
                f"--val-class-names: {path!r} lists {name!r} twice (lines {seen[name.lower()] + 1}"
                f" and {index + 1}); every class needs one name."
            )
        seen[name.lower()] = index
    return names


def class_indices(arrays, class_names, label_key=None):
    """(N,) int class index of every validation image (see the module's docstring)."""
    if label_key is not None:
        values, what = list(arrays["label"]), f"--val-label-key {label_key}"
    else:
        values = [next((c for c in captions if c), "") for captions in arrays["caption"]]
        what = "the first caption (no --val-label-key)"
    by_name = {name.strip().lower(): i for i, name in enumerate(class_names)}
    indices, unknown = [], []
    for value in values:
        text = str(value).strip()
        if label_key is not None and text.lstrip("-").isdigit():
            index = int(text)
            index = index if 0 <= index < len(class_names) else None
        else:
            index = by_name.get(text.lower())
        if index is None:
            unknown.append(text)
        indices.append(index)
    if unknown:
        examples = sorted(set(unknown))[:5]
        raise ValueError(
            f"{len(unknown)} of {len(values)} validation images have a class that is not in "
            f"--val-class-names ({len(class_names)} classes), e.g. {examples}, read from "
            f"{what}. A label is a class name or an index from 0 to {len(class_names) - 1}; "
            "without --val-label-key the first caption must be a class name."
        )
    return np.array(indices, np.int64)


def load_validation(
    source,
    path,
    image_size,
    max_examples,
    image_key=None,
    caption_key=None,
    label_key=None,
    split=None,
    seed=0,
):
    """The validation arrays (`keras_silc.data.evaluation_arrays`) of the first
    `max_examples` pairs of a source, in its order for `seed`."""
    from keras_silc import data

    pairs = read_pairs(source, path, image_key, caption_key, label_key, seed=seed, split=split)
    return data.evaluation_arrays(pairs, image_size, max_examples)


def validation_evaluations(arrays, class_names=None, labels=None):
    """{name: fn(model) -> dict of floats} for `EvaluationCallback`: retrieval both ways
    (Recall@1/5/10) on the pairs, and zero-shot top-1 / top-5 accuracy with
    `class_names` and `labels` (from `class_indices`), prompt-ensembled with
    `evaluation.DEFAULT_TEMPLATES`. The model's own tokenizer tokenizes the texts."""
    from keras_silc import evaluation

    evaluations = {
        "retrieval": functools.partial(
            evaluation.retrieval, tokenizer=None, images=arrays["image"], captions=arrays["caption"]
        )
    }
    if class_names is not None:
        evaluations["zero_shot"] = functools.partial(
            evaluation.zero_shot_classification,
            tokenizer=None,
            images=arrays["image"],
            labels=labels,
            class_names=list(class_names),
        )
    return evaluations
