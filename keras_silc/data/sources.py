"""Readers of image-text pairs. Each returns a `tf.data.Dataset` of

    {"image": tf.string (encoded bytes) or uint8 (H, W, 3), "caption": tf.string (C,)}

(`from_csv` gives "image_path" instead of "image": the file is read by the decoder)
with one or more captions per image ("" where a row has fewer), and carries a `DataStats`
as `dataset.stats`. `training_dataset` turns pairs into training batches. Given a label key,
a reader adds "label": tf.string, a class index ("3") or name, for zero-shot evaluation.

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
from keras_silc.checks import positive_int
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
    if isinstance(patterns, bytes) or not isinstance(patterns, list | tuple):
        raise TypeError(
            f"Give the {what} as a path, a glob ('shards/*.tar'), a brace range "
            f"('shards/{{00000..00009}}.tar') or a list of them; got {patterns!r}."
        )
    files = []
    for pattern in patterns:
        for expanded in _expand_braces(os.fspath(pattern)):
            if any(char in expanded for char in "*?["):
                matches = sorted(tf.io.gfile.glob(expanded))
                if not matches:
                    raise FileNotFoundError(f"No {what} match the pattern {expanded!r}.")
                files.extend(matches)
            elif tf.io.gfile.isdir(expanded):
                raise ValueError(
                    f"{expanded!r} is a folder; name the {what} in it, e.g. "
                    f"{os.path.join(expanded, '*.tar')!r}."
                )
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
    if (shard_index is None) != (num_shards is None):
        raise ValueError(
            "Pass shard_index and num_shards together (this host's part of the files), or "
            f"neither; got shard_index={shard_index!r}, num_shards={num_shards!r}."
        )
    if shard_index is None:
        shard_index, num_shards = default_shard_index()
    num_shards = positive_int(num_shards, "num_shards")
    if isinstance(shard_index, bool) or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index!r}.")
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
def _tar_groups(path):
    """Yields (key, {extension: bytes}) of one WebDataset shard, front to back, from any
    tf.io.gfile path (stream mode: read once). Errors of a damaged shard propagate."""
    key, members = None, {}
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
                yield key, members
                members = {}
            key = member_key
            members[extension] = archive.extractfile(member).read()
    if key is not None:
        yield key, members


class _WebDatasetKeys:
    """Where a sample keeps its image, caption(s) and label.

    A key names a file of the sample by its extension ("jpg", "txt", "cls", "seg.png"), or,
    for a caption or a label, a field of the sample's `.json` when it has no such file.
    Several image extensions may be given as alternatives, "jpg;png" (WebDataset's
    spelling). Defaults: the image is the sample's first file with an image extension; the
    caption is its `.txt`, else the `.json`'s "caption"; no label.
    """

    def __init__(self, image_key=None, caption_key=None, label_key=None):
        for name, value in (("image_key", image_key), ("caption_key", caption_key)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
        self.image_key = image_key
        self.images = (
            tuple(e.strip().lower() for e in image_key.split(";") if e.strip())
            if image_key
            else IMAGE_EXTENSIONS
        )
        self.caption_key = caption_key
        self.label_key = label_key

    @staticmethod
    def _json(members):
        if "json" not in members:
            return {}
        try:
            record = json.loads(members["json"].decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def image(self, members):
        return next((members[e] for e in self.images if e in members), None)

    def _field(self, members, key):
        """The texts of `key` in a sample: its file, else its JSON field ([] if neither)."""
        if key in members:
            return [members[key].decode("utf-8", errors="replace")]
        value = self._json(members).get(key)
        if value is None:
            return []
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]

    def captions(self, members):
        if self.caption_key is None:
            return (
                self._field(members, "txt") if "txt" in members else self._field(members, "caption")
            )
        return self._field(members, self.caption_key)

    def label(self, members):
        values = self._field(members, self.label_key)
        return values[0].strip() if values else None

    def check(self, path, samples=16):
        """Raises KeyError when none of the first `samples` samples of the shard `path`
        has a wanted key (a misspelt key fails at once, not as skipped samples)."""
        seen, found = [], {"image": False, "caption": False, "label": self.label_key is None}
        try:
            for _, members in _tar_groups(path):
                seen.append(members)
                found["image"] |= self.image(members) is not None
                found["caption"] |= bool(self.captions(members))
                if self.label_key is not None:
                    found["label"] |= self.label(members) is not None
                if all(found.values()) or len(seen) >= samples:
                    break
        except (tarfile.TarError, EOFError, OSError, tf.errors.OpError):
            pass  # a damaged shard is counted when it is read
        if not seen or all(found.values()):
            return
        files = sorted({extension for members in seen for extension in members})
        fields = sorted({field for members in seen for field in self._json(members)})
        wanted = {
            "image": ("image_key", self.image_key, f"a file {'/'.join(IMAGE_EXTENSIONS)}"),
            "caption": ("caption_key", self.caption_key, "a .txt, or a .json caption field"),
            "label": ("label_key", self.label_key, None),
        }
        missing = [
            f"{name}={key!r}" if key is not None else f"{name} unset ({default})"
            for name, key, default in (wanted[k] for k, ok in found.items() if not ok)
        ]
        raise KeyError(
            f"No sample among the first {len(seen)} of {path} has {', '.join(missing)}; their "
            f"files have the extensions {files} and their .json the fields {fields}. Name the "
            "image by its extension (e.g. jpg or jpg;png), the caption and label by an "
            "extension or a .json field."
        )


def _read_tar_samples(path, keys, max_captions, stats):
    """Yields (image bytes, captions[, label]) of one WebDataset shard; counts what it
    skips."""
    path = path.decode() if isinstance(path, bytes) else path

    def finish(key, members):
        image = keys.image(members)
        captions = keys.captions(members)
        label = keys.label(members) if keys.label_key is not None else ""
        if image is None or not captions or label is None:
            stats.add("incomplete_samples")
            what = "no label" if image is not None and captions else "no image or caption"
            logger.warning("Skipping WebDataset sample %r in %s: %s.", key, path, what)
            return None
        captions = (captions + [""] * max_captions)[:max_captions]
        sample = (image, np.array(captions, dtype=object))
        return (*sample, label) if keys.label_key is not None else sample

    try:
        for key, members in _tar_groups(path):
            sample = finish(key, members)
            if sample is not None:
                stats.add("records")
                yield sample
    except (tarfile.TarError, EOFError, OSError, tf.errors.OpError) as error:
        stats.add("truncated_shards")
        logger.warning("Skipping the rest of shard %s: %s", path, error)


def from_webdataset(
    urls,
    caption_key=None,
    max_captions=1,
    shard_index=None,
    num_shards=None,
    shuffle_shards=True,
    seed=None,
    cycle_length=4,
    image_key=None,
    label_key=None,
):
    """Image-text pairs from WebDataset tar shards, as img2dataset writes them.

    Each sample is a group of files sharing a key: an image and a caption, from `KEY.txt`
    or from a field of `KEY.json` (a string or a list of strings: several captions per
    image). The keys are checked on the first samples of the first shard: a key that none
    of them has fails at once, naming the files and fields they have.

    Args:
        urls: a path, glob, brace range ("data/{00000..00099}.tar") or a list of them; any
            filesystem `tf.io.gfile` reads (local, gs://).
        caption_key: the caption's file extension ("txt") or `.json` field ("caption").
            Default: `KEY.txt`, else the `.json`'s "caption".
        max_captions: captions kept per image (padded with "").
        shard_index, num_shards: this host's part of the shards; by default the JAX
            process index and count (one part per host), else everything.
        shuffle_shards: shuffle the shard order every epoch (seeded by `seed`).
        cycle_length: shards read concurrently.
        image_key: the image's file extension, or alternatives "jpg;png". Default: the
            sample's first file with an image extension (jpg, jpeg, png, webp, bmp, gif).
        label_key: a class label's file extension ("cls", WebDataset's convention) or
            `.json` field, or None. With it every pair also has "label", a string (the
            file's text or the field's value: "3" or "sneaker"); a sample without one is
            skipped and counted.
    """
    keys = _WebDatasetKeys(image_key, caption_key, label_key)
    max_captions = positive_int(max_captions, "max_captions")
    if cycle_length != tf.data.AUTOTUNE:
        cycle_length = positive_int(cycle_length, "cycle_length")
    files = _shard_files(list_files(urls, "WebDataset shards"), shard_index, num_shards)
    keys.check(files[0])
    stats = DataStats()
    signature = (tf.TensorSpec([], tf.string), tf.TensorSpec([max_captions], tf.string))
    if label_key is not None:
        signature = (*signature, tf.TensorSpec([], tf.string))

    def shard_samples(path):
        return tf.data.Dataset.from_generator(
            lambda p: _read_tar_samples(p, keys, max_captions, stats),
            args=(path,),
            output_signature=signature,
        )

    dataset = _file_dataset(files, shuffle_shards, seed).interleave(
        shard_samples,
        cycle_length=min(cycle_length, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    names = ("image", "caption", "label")
    dataset = dataset.map(lambda *sample: dict(zip(names, sample, strict=False)))
    return _with_stats(dataset, stats)


# ---------------------------------------------------------------------- TFRecord
def _first_example_features(path, compression_type=None):
    """{feature name: kind ("bytes_list", "int64_list", "float_list")} of the file's first
    `tf.train.Example`, or None for an empty file."""
    try:
        records = list(tf.data.TFRecordDataset([path], compression_type=compression_type).take(1))
    except tf.errors.OpError as error:
        compression = compression_type or "no compression"
        raise ValueError(
            f"{path!r} does not read as a TFRecord file with {compression} ({error.message}). "
            "Is it a TFRecord file, and is compression_type right (None, 'GZIP' or 'ZLIB')?"
        ) from None
    for record in records:
        try:
            example = tf.train.Example.FromString(record.numpy())
        except Exception:  # protobuf's DecodeError
            raise ValueError(
                f"The first record of {path!r} is not a tf.train.Example; from_tfrecord reads "
                "files of serialised tf.train.Example protos."
            ) from None
        return {
            name: feature.WhichOneof("kind")
            for name, feature in sorted(example.features.feature.items())
        }
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
    label_key=None,
):
    """Image-text pairs from TFRecord files of `tf.train.Example`s.

    Args:
        files: path(s) or glob(s).
        image_key: bytes feature with the encoded image.
        caption_key: bytes feature with one or more captions.
        max_captions: captions kept per image (padded with "").
        compression_type: None, "GZIP" or "ZLIB".
        label_key: an int64 or bytes feature with a class label, or None. With it every
            pair also has "label", a string ("3" or "sneaker").
    """
    if compression_type not in (None, "", "GZIP", "ZLIB"):
        raise ValueError(
            f"compression_type must be None, 'GZIP' or 'ZLIB', got {compression_type!r}."
        )
    max_captions = positive_int(max_captions, "max_captions")
    files = _shard_files(list_files(files, "TFRecord files"), shard_index, num_shards)
    kinds = _first_example_features(files[0], compression_type)
    wanted = [key for key in (image_key, caption_key, label_key) if key is not None]
    if kinds is not None:
        missing = [key for key in wanted if key not in kinds]
        if missing:
            raise KeyError(
                f"Field(s) {missing} not found in {files[0]}; its features are {sorted(kinds)}. "
                "Pass image_key= and caption_key= (and label_key=) to name them."
            )
        for key in (image_key, caption_key):
            if kinds[key] != "bytes_list":
                raise ValueError(
                    f"Feature {key!r} of {files[0]} holds {kinds[key].split('_')[0]} values; "
                    f"the {'image' if key == image_key else 'caption'} must be a bytes feature "
                    "(encoded image bytes, caption strings)."
                )
    stats = DataStats()
    features = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        caption_key: tf.io.VarLenFeature(tf.string),
    }
    label_is_int = label_key is not None and (kinds or {}).get(label_key) == "int64_list"
    if label_key is not None:
        features[label_key] = tf.io.FixedLenFeature([], tf.int64 if label_is_int else tf.string)

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        captions = tf.sparse.to_dense(example[caption_key], default_value="")
        captions = tf.concat([captions, tf.fill([max_captions], "")], 0)[:max_captions]
        pair = {"image": example[image_key], "caption": tf.ensure_shape(captions, [max_captions])}
        if label_key is not None:
            label = example[label_key]
            pair["label"] = tf.strings.as_string(label) if label_is_int else label
        return pair

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
def _read_json_rows(path, handle):
    text = handle.read()
    if path.endswith(".json") and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)  # one JSON array of row objects
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not valid JSON: {error}.") from None
        numbered = list(enumerate(rows, 1))
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not a JSON object ({error.msg}). A .jsonl table "
                    'holds one object per line, e.g. {"image": "a.jpg", "caption": "..."}.'
                ) from None
    for number, row in numbered:
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}, row {number}: a row must be an object with the image and caption "
                f"fields, got a {type(row).__name__}."
            )
    return [row for _, row in numbered]


def _read_table(path, delimiter):
    if os.path.isdir(path):
        raise ValueError(
            f"The caption table {path!r} is a folder: pass the .csv, .tsv or .jsonl file in it."
        )
    try:
        if path.endswith(".jsonl") or path.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                return _read_json_rows(path, handle)
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter=delimiter or ","))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"The caption table {path!r} is not UTF-8 text (byte {error.start} cannot be "
            "decoded): save it as UTF-8."
        ) from None


def from_csv(
    path,
    image_column="image",
    caption_column="caption",
    image_root=None,
    delimiter=None,
    max_captions=None,
    label_column=None,
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
        label_column: a column with a class label, or None. With it every pair also has
            "label", a string ("3" or "sneaker"); an image's label is that of its first row.
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
    for column in (image_column, caption_column, label_column):
        if column is not None and column not in rows[0]:
            raise KeyError(
                f"Column {column!r} not found in {path!r}; its columns are {columns}. Pass "
                "image_column= and caption_column= (and label_column=) to name them "
                "(keras-silc: --image-key, --caption-key, --val-label-key)."
            )
    image_root = os.fspath(image_root) if image_root else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"The image folder {image_root!r} does not exist.")

    if max_captions is not None:
        max_captions = positive_int(max_captions, "max_captions")
    captions_by_image, label_of_image = {}, {}
    for number, row in enumerate(rows, 1):
        for column in (image_column, caption_column, label_column):
            missing = column not in row if column == caption_column else row.get(column) is None
            if column is not None and missing:
                raise ValueError(
                    f"Row {number} of {path!r} has no {column!r} field; every row needs one "
                    "(an empty caption is skipped by the pipeline)."
                )
        captions = row[caption_column]
        captions = captions if isinstance(captions, list) else [captions]
        image_path = os.path.join(image_root, str(row[image_column]))
        captions_by_image.setdefault(image_path, []).extend(str(c or "") for c in captions)
        if label_column is not None:
            label_of_image.setdefault(image_path, str(row[label_column]).strip())
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
    columns = {"image_path": image_paths, "caption": captions.astype(str)}
    if label_column is not None:
        columns["label"] = [label_of_image[p] for p in image_paths]
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    stats = DataStats()
    stats.add("records", len(image_paths))
    return _with_stats(dataset, stats)


# --------------------------------------------------------------------------- TFDS
def _get_field(element, key):
    if key in element:  # a top-level name with "/" in it
        return element[key]
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
    label_key=None,
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
        label_key: a field with a class label (a `ClassLabel` index or a string), or None.
            With it every pair also has "label", a string ("3" or "sneaker").
    """
    tfds = require("tensorflow_datasets")

    builder = tfds.builder(name, data_dir=data_dir)
    keys = _feature_keys(builder.info.features)
    for key in (image_key, caption_key, label_key):
        if key is not None and key not in keys:
            raise KeyError(
                f"Field {key!r} not found in TFDS dataset {name!r}; its fields are {keys}. Pass "
                "image_key= and caption_key= (and label_key=) to name them."
            )
    max_captions = positive_int(max_captions, "max_captions")
    if download:
        builder.download_and_prepare()
    try:
        dataset = builder.as_dataset(
            split=split,
            shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except AssertionError as error:  # TFDS asserts that the data is prepared
        raise FileNotFoundError(
            f"The TFDS dataset {name!r} is not prepared under {builder.data_dir!r}. Prepare it "
            f"once with `tfds build {name} --data_dir DIR` and pass data_dir=DIR (keras-silc "
            "reads the TFDS_DATA_DIR environment variable), or pass download=True to let TFDS "
            f"download it. ({str(error).strip().splitlines()[0]})"
        ) from None

    caption_spec = _get_field(dataset.element_spec, caption_key)
    if caption_spec.dtype != tf.string:
        raise ValueError(
            f"Field {caption_key!r} of {name!r} holds {caption_spec.dtype.name} values; the "
            "caption must be a text field (caption_key=...)."
        )
    image_spec = _get_field(dataset.element_spec, image_key)
    if image_spec.dtype != tf.string and (
        image_spec.shape.rank != 3 or image_spec.shape[-1] not in (1, 3, None)
    ):
        raise ValueError(
            f"Field {image_key!r} of {name!r} has shape {image_spec.shape}; the image must be "
            "an (H, W, 1 or 3) image field or encoded image bytes (image_key=...)."
        )

    def to_pair(element):
        captions = tf.reshape(_get_field(element, caption_key), [-1])
        captions = tf.concat([captions, tf.fill([max_captions], "")], 0)[:max_captions]
        image = _get_field(element, image_key)
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        pair = {"image": image, "caption": tf.ensure_shape(captions, [max_captions])}
        if label_key is not None:
            label = tf.reshape(_get_field(element, label_key), [])
            pair["label"] = label if label.dtype == tf.string else tf.strings.as_string(label)
        return pair

    return _with_stats(dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE), DataStats())


# ------------------------------------------------------------------------ arrays
def _caption_array(captions):
    """(N, C) str captions of N strings or N equal-length sequences of strings."""
    if isinstance(captions, str | bytes):
        raise ValueError(
            "captions must hold one caption (or one list of captions) per image, got a single "
            "string; for one image pass [caption]."
        )
    try:
        array = np.asarray(captions, dtype=object)
    except ValueError:
        array = None
    if array is None or (array.ndim == 1 and any(isinstance(c, list | tuple) for c in array)):
        raise ValueError(
            "The images have different numbers of captions; pad each list with '' (an empty "
            "caption is never drawn) to the same length."
        )
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"captions must be (N,) or (N, C) strings, got shape {array.shape}.")
    for caption in array.flat:
        if not isinstance(caption, str | bytes):
            raise ValueError(
                f"captions must be strings, got {caption!r} ({type(caption).__name__}); use "
                "'' for an image without a caption and str() for numbers you mean as text."
            )
    return np.vectorize(
        lambda c: c.decode("utf-8") if isinstance(c, bytes) else c, otypes=[object]
    )(array).astype(str)


def _stacked_images(images):
    try:
        return np.asarray(images)
    except ValueError as error:
        if "inhomogeneous" not in str(error):
            raise
        sizes = sorted({np.shape(image) for image in images}, key=str)[:3]
        raise ValueError(
            f"The images have different sizes ({', '.join(map(str, sizes))}): resize them to "
            "one size first, or pass them encoded (a list of JPEG/PNG bytes, which may differ "
            "in size; the views are cropped and resized from each)."
        ) from None


def from_arrays(images, captions):
    """Image-text pairs from in-memory arrays.

    Args:
        images: (N, H, W, 3) or (N, H, W) uint8 images (or finite floats in [0, 1]: others
            are refused), or a sequence of N encoded image byte strings.
        captions: N strings, or (N, C) strings (several captions per image).
    """
    captions = _caption_array(captions)
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], bytes):
        images = np.array(images, dtype=object)
    else:
        images = _stacked_images(images)
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
    if not len(images):
        raise ValueError("from_arrays got no images: there is nothing to train or evaluate on.")
    dataset = tf.data.Dataset.from_tensor_slices({"image": images, "caption": captions})
    stats = DataStats()
    stats.add("records", len(captions))
    return _with_stats(dataset, stats)


def write_webdataset(path, images, captions, jpeg_quality=90, samples_per_shard=1000, labels=None):
    """Writes (images, captions) as WebDataset shards of JPEG + txt, like img2dataset.

    `path` is a pattern with one "{}" for the shard number ("shards/{}.tar"); returns the
    list of files. A caption that is a list of strings goes into a `.json` ("caption");
    `labels` (N ints or strings), when given, into a `.cls` file per sample (WebDataset's
    convention; read them with `from_webdataset(label_key="cls")`). Useful for tests,
    benchmarks and converting small datasets.
    """
    images = _stacked_images(images)
    if images.dtype != np.uint8:
        check_images(images, "write_webdataset images")  # floats in [0, 1] -> uint8 JPEGs
        images = np.round(images.astype(np.float32) * 255.0).astype(np.uint8)
    if isinstance(captions, str | bytes) or len(captions) != len(images):
        count = 1 if isinstance(captions, str | bytes) else len(captions)
        raise ValueError(f"{len(images)} images but {count} captions: give one per image.")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    samples_per_shard = positive_int(samples_per_shard, "samples_per_shard")
    if "{}" not in path and len(images) > samples_per_shard:
        raise ValueError(
            f"path {path!r} has no '{{}}' for the shard number, and the {len(images)} samples "
            f"fill more than one shard of {samples_per_shard}: each would overwrite the last. "
            "Use a pattern such as 'shards/{}.tar'."
        )
    files = []
    for shard, start in enumerate(range(0, len(images), samples_per_shard)):
        name = path.format(f"{shard:05d}")
        os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
        with tarfile.open(name, "w") as archive:
            for index in range(start, min(start + samples_per_shard, len(images))):
                jpeg = tf.io.encode_jpeg(images[index], quality=jpeg_quality).numpy()
                caption = captions[index]
                if isinstance(caption, str):
                    members = [("jpg", jpeg), ("txt", caption.encode("utf-8"))]
                else:
                    payload = json.dumps({"caption": list(caption)}).encode("utf-8")
                    members = [("jpg", jpeg), ("json", payload)]
                if labels is not None:
                    members.append(("cls", str(labels[index]).encode("utf-8")))
                for suffix, payload in members:
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
