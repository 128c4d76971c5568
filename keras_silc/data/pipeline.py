"""From image-text pairs to SILC training batches (the batch format of `SilcModel`)."""

import random

import numpy as np
import tensorflow as tf

from keras_silc.checks import positive_int
from keras_silc.checks import resolve_tokenizer
from keras_silc.data.augment import MultiCropConfig
from keras_silc.data.augment import multi_crop_views
from keras_silc.data.sources import independent_of_global_seed
from keras_silc.data.stats import DataStats


def decode_pixels(element):
    """(H, W, 3) pixels as stored: uint8 from encoded bytes, a file path or a uint8 array,
    float32 in [0, 1] from a float array. The multi-crop views take either; uint8 is
    converted after resizing, on the small crops, not on the decoded image."""
    if "image_path" in element:
        image = tf.io.read_file(element["image_path"])
    else:
        image = element["image"]
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    if image.dtype == tf.uint8:
        return image
    return tf.cast(image, tf.float32)


FIRST_PAIRS_CHECKED = 64
IMAGE_DTYPES = ("float32", "bfloat16", "float16")


def check_first_pairs(pairs, stats, count=FIRST_PAIRS_CHECKED):
    """Raises ValueError when the first `count` pairs hold no example with a caption and an
    image that decodes: a repeated stream of such pairs never yields a batch (it would loop
    over them for ever), and an unrepeated one yields none."""
    seen = captioned = decoded = 0
    first_error = None
    with stats.uncounted():
        for element in pairs.take(count).ignore_errors():
            seen += 1
            if not bool(_has_caption(element)):
                continue
            captioned += 1
            try:
                decode_pixels(element)
                decoded += 1
            except (tf.errors.OpError, ValueError) as error:
                first_error = first_error or str(error).strip().splitlines()[0]
    if not seen:
        raise ValueError(
            "pairs yields no examples: the source is empty or none of its records reads. "
            "Check the files, folders or arrays it was made from."
        )
    if not captioned:
        raise ValueError(
            f"None of the first {seen} pairs has a non-empty caption; check the caption "
            "column or key the source reads (caption_key=...)."
        )
    if not decoded:
        raise ValueError(
            f"None of the first {captioned} captioned images decodes (first error: "
            f"{first_error}). Check that the image column or key holds encoded images (JPEG, "
            "PNG, ...), paths to them, or pixel arrays."
        )


def _pick_caption(captions, seed):
    """One non-empty caption per example, uniformly among its captions ("" if none)."""
    captions = tf.reshape(captions, [-1])
    captions = tf.boolean_mask(captions, tf.strings.length(tf.strings.strip(captions)) > 0)
    count = tf.shape(captions)[0]
    index = tf.random.stateless_uniform([], seed, maxval=tf.maximum(count, 1), dtype=tf.int32)
    return tf.cond(count > 0, lambda: captions[index], lambda: tf.constant(""))


def _has_caption(element):
    captions = tf.reshape(element["caption"], [-1])
    return tf.reduce_any(tf.strings.length(tf.strings.strip(captions)) > 0)


def _check_tokenizer_output(tokenizer):
    """A ValueError, before any batch is made, unless `tokenizer` maps a batch of captions
    to dense (N, T) integer ids (checked on its traced output spec: raised inside the
    pipeline's map, the message would come wrapped in an autograph trace)."""
    captions = tf.data.Dataset.from_tensors(tf.constant(["a caption", "another caption"]))
    spec = captions.map(tokenizer).element_spec
    expected = (
        "The tokenizer must map a batch of captions to dense (N, T) integer token ids "
        "padded with 0 (e.g. keras_silc.data.SilcTokenizer)"
    )
    if isinstance(spec, tf.RaggedTensorSpec):
        raise ValueError(f"{expected}; it returns ragged ids. Pad them to a fixed length.")
    if not isinstance(spec, tf.TensorSpec):
        raise ValueError(f"{expected}; it returns {spec}.")
    if not spec.dtype.is_integer:
        hint = " (token strings, not ids)" if spec.dtype == tf.string else ""
        raise ValueError(f"{expected}; it returns {spec.dtype.name} values{hint}.")
    if spec.shape.rank != 2:
        raise ValueError(f"{expected}; it returns shape {spec.shape} for 2 captions.")


def training_dataset(
    pairs,
    preprocessor,
    batch_size,
    tokenizer=None,
    augmentation=None,
    shuffle_buffer=10_000,
    seed=None,
    deterministic=False,
    repeat=True,
    drop_remainder=True,
    image_dtype="float32",
    start_example=0,
):
    """Training batches for `model.fit` from a dataset of image-text pairs.

    Args:
        pairs: a `tf.data.Dataset` of {"image", "caption"} from `keras_silc.data.from_*`.
        preprocessor: the model's `SilcPreprocessor` (`model.preprocessor`; a model that
            carries one is taken too): the views' sizes and counts, which views the model
            trains on, the augmentation defaults and the tokenizer.
        batch_size: int, the global batch size.
        tokenizer: text -> (T,) int ids; default the preprocessor's.
        augmentation: a `MultiCropConfig`, or a dict of overrides of
            `preprocessor.multi_crop_config()`.
        shuffle_buffer: examples in the shuffle buffer (0 to keep the source order).
        seed: int. Seeds shuffling and augmentation: the same seed gives the same batches,
            in the same order, and a resumed run (`start_example`) those of an uninterrupted
            one. Parallel stages then keep their order (a little slower).
        deterministic: without a seed, keep element order fixed through parallel stages
            (and seed with 0); with a seed the order is always kept.
        repeat: loop forever (use `steps_per_epoch` in `fit`).
        image_dtype: "float32", or "bfloat16" / "float16" to halve host-to-device traffic.
        start_example: resume the stream at this example (step x batch size): with a seed,
            the batches from there on are those an uninterrupted run sees (exactly so when no
            image before it failed to decode). Skipping happens before decoding, so it is
            cheap.

    Returns:
        A batched, prefetched `tf.data.Dataset` of dicts with "image", "global_crops" (when
        the model uses them), "local_crops" (with self-distillation) and "text", with the
        skip counters as `dataset.stats` (see `DataStatsCallback`).
    """
    if not isinstance(pairs, tf.data.Dataset):
        raise TypeError(
            f"pairs must be a tf.data.Dataset of image-text pairs (from keras_silc.data.from_*), "
            f"got {type(pairs).__name__}."
        )
    spec = pairs.element_spec
    if (
        not isinstance(spec, dict)
        or "caption" not in spec
        or not ("image" in spec or "image_path" in spec)
    ):
        raise ValueError(
            "pairs must yield dicts with 'image' (or 'image_path') and 'caption'; got "
            f"{spec}. Use keras_silc.data.from_arrays / from_webdataset / ... to make them."
        )
    batch_size = positive_int(batch_size, "batch_size")
    if batch_size < 2:
        raise ValueError(
            "batch_size must be at least 2: the other pairs of a batch are each pair's "
            "negatives, so a batch of 1 trains a contrastive loss of 0."
        )
    if (
        isinstance(shuffle_buffer, bool)
        or not isinstance(shuffle_buffer, int)
        or shuffle_buffer < 0
    ):
        raise ValueError(
            f"shuffle_buffer must be an int >= 0 (0: no shuffling), got {shuffle_buffer!r}."
        )
    if isinstance(start_example, bool) or not isinstance(start_example, int) or start_example < 0:
        raise ValueError(
            f"start_example must be an int >= 0 (step x batch size), got {start_example!r}."
        )
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(
            f"image_dtype must be one of {IMAGE_DTYPES} (pixels in [0, 1]), got {image_dtype!r}."
        )
    if augmentation is not None and not isinstance(augmentation, dict | MultiCropConfig):
        raise ValueError(
            "augmentation must be a MultiCropConfig or a dict of its settings (e.g. "
            f"{{'hue': 0.0}}), got {augmentation!r}."
        )
    known_pairs = int(pairs.cardinality())
    if not repeat and drop_remainder and 0 <= known_pairs < batch_size:
        raise ValueError(
            f"The {known_pairs} pairs make no full batch of {batch_size} with repeat=False and "
            "drop_remainder=True, so the dataset would be empty. Lower batch_size, pass "
            "repeat=True (and steps_per_epoch to fit), or drop_remainder=False."
        )
    preprocessor = getattr(preprocessor, "preprocessor", preprocessor)
    if not hasattr(preprocessor, "multi_crop_config"):
        raise TypeError(
            "training_dataset takes the model's SilcPreprocessor (model.preprocessor), got "
            f"{type(preprocessor).__name__}."
        )
    tokenizer = resolve_tokenizer(preprocessor, tokenizer)
    preprocessor.check_tokenizer(tokenizer)  # it must fit the text tower
    _check_tokenizer_output(tokenizer)
    if augmentation is None or isinstance(augmentation, dict):
        augmentation = preprocessor.multi_crop_config(**(augmentation or {}))
    stats = getattr(pairs, "stats", None) or DataStats()
    check_first_pairs(pairs, stats)
    seed = 0 if seed is None and deterministic else seed
    # Which examples share a batch changes the contrastive loss: with a seed, the order is
    # part of the result (a loaded CPU reorders a parallel map's output otherwise).
    ordered = deterministic or seed is not None
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        shuffle_seed = None
    else:
        shuffle_seed = seed
    base_seed = tf.constant([seed, 0], dtype=tf.int64)

    def count_empty(element):
        keep = _has_caption(element)
        return tf.cond(
            keep,
            lambda: keep,
            lambda: tf.logical_and(keep, stats.count_empty_caption() < 0),
        )

    def decode(index, element):
        return index, {"image": decode_pixels(element), "caption": element["caption"]}

    def make_views(index, element):
        # Seeds follow the example's position in the stream: the same seed and order give
        # the same views whatever the parallelism.
        seed_pair = tf.random.experimental.stateless_fold_in(base_seed, index)
        caption_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
        caption = _pick_caption(element["caption"], caption_seed)
        views = multi_crop_views(element["image"], caption, augmentation, view_seed)
        for key in ("image", "global_crops", "local_crops"):
            if key in views:
                views[key] = tf.cast(views[key], image_dtype)
        return views

    def tokenize(batch):
        batch = dict(batch)
        batch["text"] = tf.cast(tokenizer(batch.pop("caption")), tf.int32)
        return batch

    dataset = pairs.filter(count_empty)
    if shuffle_buffer:
        with independent_of_global_seed():
            dataset = dataset.shuffle(
                shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True
            )
    if repeat:
        dataset = dataset.repeat()
    if start_example:
        if shuffle_seed is None:
            raise ValueError("start_example needs a seed, or the resumed stream differs.")
        dataset = dataset.skip(start_example)
    # Only decoding may fail: an image that does not read or decode drops its example,
    # logged and counted (as a gap in the example numbers, so this stage keeps order).
    # Errors in the augmentation below are bugs and stop the run.
    dataset = dataset.enumerate(start=start_example).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.ignore_errors(log_warning=True).map(stats.count_decoded)
    dataset = dataset.map(make_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    options = tf.data.Options()
    options.deterministic = ordered
    options.experimental_optimization.map_parallelization = True
    dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
    dataset.stats = stats
    return dataset


def evaluation_arrays(pairs, image_size, max_examples=1000):
    """The first `max_examples` pairs with a caption and a decodable image, as numpy arrays
    for the evaluators (`keras_silc.evaluation`).

    Args:
        pairs: a `tf.data.Dataset` of image-text pairs (`keras_silc.data.from_*`), with or
            without "label".
        image_size: int. Every image is resized to (image_size, image_size), squashed and
            antialiased, as the evaluators do with arrays.
        max_examples: int. At most this many pairs, in the dataset's order.

    Returns:
        {"image": uint8 (N, S, S, 3), "caption": (N, C) str, and "label": (N,) str when the
        pairs have labels}. Images that do not decode are skipped with a warning.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    if not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be a positive int, got {max_examples!r}.")

    def decode(element):
        image = decode_pixels(element)
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        out = {
            "image": tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8),
            "caption": tf.reshape(element["caption"], [-1]),
        }
        if "label" in element:
            out["label"] = element["label"]
        return out

    dataset = (
        pairs.filter(_has_caption)
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors(log_warning=True)
        .take(max_examples)
    )
    rows = list(dataset.as_numpy_iterator())
    if not rows:
        raise ValueError("No pair with a caption and a decodable image to evaluate on.")
    arrays = {
        "image": np.stack([row["image"] for row in rows]),
        "caption": np.array(
            [[c.decode("utf-8") for c in row["caption"]] for row in rows], dtype=object
        ),
    }
    if "label" in rows[0]:
        arrays["label"] = np.array([row["label"].decode("utf-8") for row in rows], dtype=object)
    return arrays
