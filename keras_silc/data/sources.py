"""Readers of image-text pairs. Each returns a `tf.data.Dataset` of

    {"image": tf.string (encoded bytes) or uint8 (H, W, 3), "caption": tf.string (C,)}

(`from_csv` gives "image_path" instead of "image": the file is read by the decoder)
with one or more captions per image ("" where a row has fewer), and carries a `DataStats`
as `dataset.stats`. `training_dataset` turns pairs into training batches.

Bad data is skipped and counted, never fatal: WebDataset samples without an image or a caption,
truncated shards, undecodable images (counted by the pipeline's decoder) and empty captions.
Wrong arguments fail at once: a path that does not exist, a glob that matches nothing, a field
name the data does not have.
"""

import contextlib
import csv
import io
import json
import logging
import os
import re
import tarfile

import numpy as np
import tensorflow as tf

from keras_silc.checks import check_images
from keras_silc.data.stats import DataStats
from keras_silc.extras import require

logger = logging.getLogger("keras_silc.data")

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif")


@contextlib.contextmanager
def independent_of_global_seed():
    """`Dataset.shuffle(seed=s)` mixes `s` with TF's global seed, which
    `keras.utils.set_random_seed` sets: hide it while the op is made, so the order depends
    on our seed only (a resumed run that skips model initialisation sees the same order).

    `tf.random.set_seed` would also clear TF's kernel cache, which destroys tf-text's
    SentencePiece resources; so the seed attribute is swapped directly.
    """
    from tensorflow.python.eager import context

    ctx = context.context()
    previous = ctx._seed
    ctx._seed = None
    try:
        yield
    finally:
        ctx._seed = previous


def _with_stats(dataset, stats):
    dataset.stats = stats
    return dataset


# -------------------------------------------------------------------- file lists
def _expand_braces(pattern):
    """img2dataset's brace ranges: "shard-{00000..00099}.tar" -> 100 names."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first)
    names = []
    for number in range(int(first), int(last) + 1):
        expanded = pattern[: match.start()] + str(number).zfill(width) + pattern[match.end() :]
        names.extend(_expand_braces(expanded))
    return names


def list_files(patterns, what="files"):
    """Expands globs and brace ranges into a sorted list; fails if nothing matches."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    files = []
    for pattern in patterns:
        for expanded in _expand_braces(os.fspath(pattern)):
            if any(char in expanded for char in "*?["):
                matches = sorted(tf.io.gfile.glob(expanded))
                if not matches:
                    raise FileNotFoundError(f"No {what} match the pattern {expanded!r}.")
                files.extend(matches)
            elif tf.io.gfile.exists(expanded):
                files.append(expanded)
            else:
                raise FileNotFoundError(f"The {what[:-1]} {expanded!r} does not exist.")
    if not files:
        raise FileNotFoundError(f"No {what} given (patterns: {list(patterns)}).")
    return files


def default_shard_index():
    """(index, count) of this host among the training processes.

    JAX multi-host runs (after `jax.distributed.initialize`) read a disjoint part of the
    data per process; single-process runs read everything. tf.distribute shards
    per replica by itself through the dataset's auto-shard policy.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


def _shard_files(files, shard_index, num_shards):
    if shard_index is None or num_shards is None:
        shard_index, num_shards = default_shard_index()
    if num_shards > 1:
        if len(files) < num_shards:
            raise ValueError(
                f"{len(files)} files cannot be split over {num_shards} hosts: write at least one "
                "shard per host."
            )
        files = files[shard_index::num_shards]
    return files


def _file_dataset(files, shuffle_files, seed):
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        with independent_of_global_seed():
            dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return dataset


# -------------------------------------------------------------------- WebDataset
def _caption_from_json(payload, caption_key):
    record = json.loads(payload.decode("utf-8"))
    value = record.get(caption_key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _read_tar_samples(path, caption_key, max_captions, stats):
    """Yields (image bytes, captions) of one WebDataset shard; counts what it skips."""
    path = path.decode() if isinstance(path, bytes) else path

    def finish(key, members):
        image = next(
            (members[ext] for ext in IMAGE_EXTENSIONS if ext in members),
            None,
        )
        captions = []
        if "txt" in members:
            captions = [members["txt"].decode("utf-8", errors="replace")]
        elif "json" in members:
            try:
                captions = _caption_from_json(members["json"], caption_key)
            except (ValueError, UnicodeDecodeError):
                captions = []
        if image is None or not captions:
            stats.add("incomplete_samples")
            logger.warning("Skipping WebDataset sample %r in %s: no image or caption.", key, path)
            return None
        captions = (captions + [""] * max_captions)[:max_captions]
        return image, np.array(captions, dtype=object)

    key, members = None, {}
    try:
        # Stream mode: shards are read once, front to back, from any tf.io.gfile path.
        with (
            tf.io.gfile.GFile(path, "rb") as handle,
            tarfile.open(fileobj=handle, mode="r|*") as archive,
        ):
            for member in archive:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                if "." not in name:
                    continue
                # WebDataset: the key is everything before the first dot of the basename.
                member_key = os.path.join(os.path.dirname(member.name), name.split(".", 1)[0])
                extension = name.split(".", 1)[1].lower()
                if member_key != key and key is not None:
                    sample = finish(key, members)
                    if sample is not None:
                        stats.add("records")
                        yield sample
                    members = {}
                key = member_key
                members[extension] = archive.extractfile(member).read()
        if key is not None:
            sample = finish(key, members)
            if sample is not None:
                stats.add("records")
                yield sample
    except (tarfile.TarError, EOFError, OSError, tf.errors.OpError) as error:
        stats.add("truncated_shards")
        logger.warning("Skipping the rest of shard %s: %s", path, error)


def from_webdataset(
    urls,
    caption_key="caption",
    max_captions=1,
    shard_index=None,
    num_shards=None,
    shuffle_shards=True,
    seed=None,
    cycle_length=4,
):
    """Image-text pairs from WebDataset tar shards, as img2dataset writes them.

    Each sample is a group of files sharing a key: an image (jpg, jpeg, png, webp, bmp, gif)
    and a caption, from `KEY.txt` or from the `caption_key` field of `KEY.json` (a string or
    a list of strings: several captions per image).

    Args:
        urls: a path, glob, brace range ("data/{00000..00099}.tar") or a list of them; any
            filesystem `tf.io.gfile` reads (local, gs://).
        caption_key: JSON field of the caption when there is no `.txt`.
        max_captions: captions kept per image (padded with "").
        shard_index, num_shards: this host's part of the shards; by default the JAX
            process index and count (one part per host), else everything.
        shuffle_shards: shuffle the shard order every epoch (seeded by `seed`).
        cycle_length: shards read concurrently.
    """
    files = _shard_files(list_files(urls, "WebDataset shards"), shard_index, num_shards)
    stats = DataStats()

    def shard_samples(path):
        return tf.data.Dataset.from_generator(
            lambda p: _read_tar_samples(p, caption_key, max_captions, stats),
            args=(path,),
            output_signature=(
                tf.TensorSpec([], tf.string),
                tf.TensorSpec([max_captions], tf.string),
            ),
        )

    dataset = _file_dataset(files, shuffle_shards, seed).interleave(
        shard_samples,
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.map(lambda image, caption: {"image": image, "caption": caption})
    return _with_stats(dataset, stats)


# ---------------------------------------------------------------------- TFRecord
def _first_example_features(path):
    for record in tf.data.TFRecordDataset([path]).take(1):
        example = tf.train.Example.FromString(record.numpy())
        return sorted(example.features.feature.keys())
    return None


def from_tfrecord(
    files,
    image_key="image",
    caption_key="caption",
    max_captions=1,
    shard_index=None,
    num_shards=None,
    shuffle_files=True,
    seed=None,
    compression_type=None,
):
    """Image-text pairs from TFRecord files of `tf.train.Example`s.

    Args:
        files: path(s) or glob(s).
        image_key: bytes feature with the encoded image.
        caption_key: bytes feature with one or more captions.
        max_captions: captions kept per image (padded with "").
        compression_type: None, "GZIP" or "ZLIB".
    """
    files = _shard_files(list_files(files, "TFRecord files"), shard_index, num_shards)
    if compression_type is None:
        keys = _first_example_features(files[0])
        if keys is not None:
            missing = [key for key in (image_key, caption_key) if key not in keys]
            if missing:
                raise KeyError(
                    f"Field(s) {missing} not found in {files[0]}; its features are {keys}. "
                    "Pass image_key= and caption_key= to name them."
                )
    stats = DataStats()
    features = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        caption_key: tf.io.VarLenFeature(tf.string),
    }

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        captions = tf.sparse.to_dense(example[caption_key], default_value="")
        captions = tf.concat([captions, tf.fill([max_captions], "")], 0)[:max_captions]
        return {"image": example[image_key], "caption": tf.ensure_shape(captions, [max_captions])}

    def records(path):
        # A corrupt or truncated file ends its own stream, not the run.
        return (
            tf.data.TFRecordDataset(path, compression_type=compression_type)
            .map(parse)
            .ignore_errors(log_warning=True)
        )

    dataset = _file_dataset(files, shuffle_files, seed).interleave(
        records, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return _with_stats(dataset, stats)


# ---------------------------------------------------------------- CSV and JSONL
def _read_table(path, delimiter):
    if path.endswith(".jsonl") or path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter or ","))


def from_csv(
    path,
    image_column="image",
    caption_column="caption",
    image_root=None,
    delimiter=None,
    max_captions=None,
):
    """Image-text pairs from a CSV/TSV or JSONL table of image paths and captions.

    Rows that name the same image are grouped: their captions are that image's captions. In
    JSONL a caption field may also be a list. Relative paths are read under `image_root`
    (default: the table's folder). Images are read and decoded by the pipeline, so a missing
    or corrupt file is skipped and counted as undecodable, not fatal.

    Args:
        path: the `.csv`, `.tsv` or `.jsonl` file.
        image_column, caption_column: the column (field) names.
        image_root: folder of relative image paths.
        delimiter: CSV delimiter; "\\t" for `.tsv` by default, else ",".
        max_captions: captions kept per image; default the most any image has.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"The caption table {path!r} does not exist.")
    if delimiter is None and path.endswith(".tsv"):
        delimiter = "\t"
    rows = _read_table(path, delimiter)
    if not rows:
        raise ValueError(f"The caption table {path!r} has no rows.")
    columns = sorted(rows[0].keys())
    for column in (image_column, caption_column):
        if column not in rows[0]:
            raise KeyError(
                f"Column {column!r} not found in {path!r}; its columns are {columns}. Pass "
                "image_column= and caption_column= to name them."
            )
    image_root = os.fspath(image_root) if image_root else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"The image folder {image_root!r} does not exist.")

    captions_by_image = {}
    for row in rows:
        captions = row[caption_column]
        captions = captions if isinstance(captions, list) else [captions]
        image_path = os.path.join(image_root, str(row[image_column]))
        captions_by_image.setdefault(image_path, []).extend(str(c or "") for c in captions)
    image_paths = list(captions_by_image)
    if not os.path.exists(image_paths[0]):
        raise FileNotFoundError(
            f"The first image of {path!r}, {image_paths[0]!r}, does not exist; is image_root "
            f"({image_root!r}) right?"
        )
    width = max_captions or max(len(c) for c in captions_by_image.values())
    captions = np.array(
        [(c + [""] * width)[:width] for c in captions_by_image.values()], dtype=object
    )
    # The pipeline reads "image_path" in its decoder, so a missing file is skipped and
    # counted like an undecodable image.
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image_path": image_paths, "caption": captions.astype(str)}
    )
    stats = DataStats()
    stats.add("records", len(image_paths))
    return _with_stats(dataset, stats)


# --------------------------------------------------------------------------- TFDS
def _get_field(element, key):
    value = element
    for part in key.split("/"):
        value = value[part]
    return value


def _feature_keys(features, prefix=""):
    keys = []
    for name, feature in features.items():
        path = f"{prefix}{name}"
        keys.append(path)
        inner = getattr(feature, "feature", None)  # tfds.features.Sequence
        if hasattr(inner, "items"):
            keys.extend(_feature_keys(inner, path + "/"))
        elif hasattr(feature, "items"):
            keys.extend(_feature_keys(feature, path + "/"))
    return keys


def from_tfds(
    name,
    split="train",
    image_key="image",
    caption_key="captions/text",
    max_captions=5,
    data_dir=None,
    download=False,
    shuffle_files=True,
    seed=None,
):
    """Image-text pairs from a TensorFlow Datasets dataset, e.g. `coco_captions`.

    Args:
        name: the TFDS name ("coco_captions", "ref_coco", your own builder...).
        split: any TFDS split string ("train", "val[:10%]").
        image_key: field with the image ("/" separates nested fields).
        caption_key: field with the caption(s); a sequence gives several per image
            (`coco_captions`: "captions/text").
        max_captions: captions kept per image (padded with "").
        data_dir: where the prepared dataset lives.
        download: let TFDS download and prepare it (off: prepare it once beforehand, e.g.
            `tfds build coco_captions`).
    """
    tfds = require("tensorflow_datasets")

    builder = tfds.builder(name, data_dir=data_dir)
    keys = _feature_keys(builder.info.features)
    for key in (image_key, caption_key):
        if key not in keys:
            raise KeyError(
                f"Field {key!r} not found in TFDS dataset {name!r}; its fields are {keys}. Pass "
                "image_key= and caption_key= to name them."
            )
    if download:
        builder.download_and_prepare()
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )

    def to_pair(element):
        captions = tf.reshape(_get_field(element, caption_key), [-1])
        captions = tf.concat([captions, tf.fill([max_captions], "")], 0)[:max_captions]
        image = _get_field(element, image_key)
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        return {"image": image, "caption": tf.ensure_shape(captions, [max_captions])}

    return _with_stats(dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE), DataStats())


# ------------------------------------------------------------------------ arrays
def from_arrays(images, captions):
    """Image-text pairs from in-memory arrays.

    Args:
        images: (N, H, W, 3) or (N, H, W) uint8 images (or finite floats in [0, 1]: others
            are refused), or a sequence of N encoded image byte strings.
        captions: N strings, or (N, C) strings (several captions per image).
    """
    captions = np.asarray(captions, dtype=object).astype(str)
    if captions.ndim == 1:
        captions = captions[:, None]
    if captions.ndim != 2:
        raise ValueError(f"captions must be (N,) or (N, C) strings, got shape {captions.shape}.")
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], bytes):
        images = np.array(images, dtype=object)
    else:
        images = np.asarray(images)
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must be (N, H, W, 3), (N, H, W) or a list of encoded bytes; got shape "
                f"{images.shape}."
            )
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if images.dtype != np.uint8:
            # Refused here, where they enter: 0..255 floats would train silently on
            # saturated crops, and one NaN pixel makes the weights NaN in one step.
            check_images(images, "from_arrays images")
            images = images.astype(np.float32)
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions.")
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "caption": captions})
    stats = DataStats()
    stats.add("records", len(captions))
    return _with_stats(dataset, stats)


def write_webdataset(path, images, captions, jpeg_quality=90, samples_per_shard=1000):
    """Writes (images, captions) as WebDataset shards of JPEG + txt, like img2dataset.

    `path` is a pattern with one "{}" for the shard number ("shards/{}.tar"); returns the
    list of files. Useful for tests, benchmarks and converting small datasets.
    """
    images = np.asarray(images)
    files = []
    for shard, start in enumerate(range(0, len(images), samples_per_shard)):
        name = path.format(f"{shard:05d}")
        os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
        with tarfile.open(name, "w") as archive:
            for index in range(start, min(start + samples_per_shard, len(images))):
                jpeg = tf.io.encode_jpeg(images[index], quality=jpeg_quality).numpy()
                caption = captions[index]
                caption = caption if isinstance(caption, str) else json.dumps(list(caption))
                extension = "txt" if isinstance(captions[index], str) else "json"
                if extension == "json":
                    caption = json.dumps({"caption": list(captions[index])})
                for suffix, payload in (("jpg", jpeg), (extension, caption.encode("utf-8"))):
                    info = tarfile.TarInfo(f"{index:09d}.{suffix}")
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
        files.append(name)
    return files


__all__ = [
    "from_arrays",
    "from_csv",
    "from_tfds",
    "from_tfrecord",
    "from_webdataset",
    "list_files",
    "write_webdataset",
]
