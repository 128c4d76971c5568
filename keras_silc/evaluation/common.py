"""Shared plumbing of the evaluators: inputs, batching, compiled model calls, the tokenizer.

Every evaluator takes its data either as numpy-like arrays (images uint8 in [0, 255] or float
in [0, 1], (N, H, W, 3)) or as a *source*: a dict of arrays, a `tf.data.Dataset` or any
iterable of dict batches (or single examples) with the named keys. `batches` turns both into
numpy dict batches of at most `batch_size` rows, so nothing has to fit in memory at once.

Model calls go through `model_fn`: on JAX a `jax.jit` of the method run statelessly (the
current weights are passed in on every call, so a cached function never sees stale weights),
on TensorFlow a `tf.function`, on torch an eager call under `torch.no_grad()`. Objects that
are not Keras models (test doubles, wrappers) are called as they are.
"""

import collections
import weakref

import keras
import numpy as np

from keras_silc.checks import check_images
from keras_silc.checks import positive_int


def tokenize(tokenizer, texts):
    """(N, T) int32 numpy token ids of a list of str."""
    ids = tokenizer(list(texts))
    ids = np.asarray(keras.ops.convert_to_numpy(ids) if not isinstance(ids, np.ndarray) else ids)
    if ids.ndim != 2 or len(ids) != len(texts):
        raise ValueError(
            f"The tokenizer must map {len(texts)} texts to a ({len(texts)}, T) array of token "
            f"ids; it returned shape {ids.shape}."
        )
    return ids.astype(np.int32)


def as_text(value):
    """str of a str, bytes or numpy scalar caption."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    return str(value)


def image_size(model):
    config = getattr(model, "vision_config", None) or {}
    return config.get("image_size")


def embedding_width(model):
    """J, the width of the model's shared embedding space, or None when it does not say."""
    return getattr(getattr(model, "text_encoder", None), "embedding_dim", None)


def check_image_shape(images, what="images"):
    """Raises ValueError unless `images` are (N, H, W, 3), grey (N, H, W, 1) or (N, H, W).

    An (H, W, 3) array is refused: read as grey it would be H images 3 pixels wide.
    """
    shape = tuple(np.shape(images))
    if len(shape) == 3 and shape[-1] == 3:
        raise ValueError(
            f"{what} of shape {shape} look like one (H, W, 3) RGB image, not a batch: pass "
            "images[None]. (Grey images 3 pixels wide: pass them as (N, H, 3, 1).)"
        )
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
        raise ValueError(f"{what} must be (N, H, W, 3) or (N, H, W), got shape {shape}.")
    return images


def as_float_images(images, size=None):
    """uint8 or [0, 1] float (N, H, W, 3) (or grey (N, H, W) / (N, H, W, 1)) -> float32 in
    [0, 1], resized to (size, size) with antialiasing when the size differs."""
    images = np.asarray(check_image_shape(images))
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    check_images(images)
    images = images.astype(np.float32)
    if size is not None and images.shape[1:3] != (size, size):
        images = keras.ops.convert_to_numpy(
            keras.ops.image.resize(images, (size, size), antialias=True)
        )
    return np.asarray(images, np.float32)


def l2_normalize(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------- inputs
def _rows(value):
    return len(value) if not np.isscalar(value) else 1


def source_from(data, arrays, keys):
    """A source for `batches`: `data` itself when `arrays` are all None, else a dict of
    `data` (the images) and `arrays` under `keys` (the first key is for `data`)."""
    array_like = isinstance(data, np.ndarray) or (
        isinstance(data, list | tuple) and len(data) > 0 and not isinstance(data[0], dict)
    )
    if all(a is None for a in arrays) and not array_like:
        return data
    if any(a is None for a in arrays):
        missing = [k for k, a in zip(keys[1:], arrays, strict=True) if a is None]
        raise ValueError(f"Pass {', '.join(missing)} with the images, or a dict/dataset source.")
    source = dict(zip(keys, (data, *arrays), strict=True))
    lengths = {k: len(v) for k, v in source.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Every input needs one row per image; got lengths {lengths}.")
    return source


def num_rows(source, key):
    """The number of examples of a dict source, else None (datasets, iterables)."""
    if isinstance(source, dict):
        return len(source[key]) if key in source else None  # `batches` names a missing key
    try:
        import tensorflow as tf

        if isinstance(source, tf.data.Dataset):
            n = int(source.cardinality())
            return n if n >= 0 else None
    except ImportError:  # pragma: no cover
        pass
    return None


def _iterate(source):
    try:
        import tensorflow as tf

        if isinstance(source, tf.data.Dataset):
            return source.as_numpy_iterator()
    except ImportError:  # pragma: no cover
        pass
    return iter(source)


def _uneven(key, shapes):
    shapes = ", ".join(str(s) for s in sorted(set(shapes), key=str)[:3])
    return ValueError(
        f"The {key!r} rows have different shapes ({shapes}); stack only rows of one shape. "
        "For images, resize them to one size first (the evaluators then resize every batch "
        "to the model's image size), or pass a tf.data.Dataset that resizes them."
    )


def _stack(rows, key):
    try:
        return np.asarray(rows)
    except ValueError as error:
        if "inhomogeneous" not in str(error):
            raise
        raise _uneven(key, [np.shape(r) for r in rows]) from None


def _concatenate(parts, key):
    if len({np.shape(p)[1:] for p in parts}) > 1:
        raise _uneven(key, [np.shape(p)[1:] for p in parts])
    return np.concatenate(parts)


def batches(source, keys, batch_size, image_key=None):
    """Numpy dict batches (only `keys`) of at most `batch_size` rows from a dict of arrays, a
    `tf.data.Dataset` or an iterable of dicts (batched or single examples: a single example is
    one whose `image_key` entry has 3 dimensions)."""
    image_key = image_key or keys[0]
    if isinstance(source, dict):
        missing = [k for k in keys if k not in source]
        if missing:
            raise KeyError(f"The data has no {missing} (it has {sorted(source)}).")
        n = len(source[image_key])
        for start in range(0, n, batch_size):
            yield {k: _stack(source[k][start : start + batch_size], k) for k in keys}
        return
    pending, count = collections.defaultdict(list), 0
    for element in _iterate(source):
        if not isinstance(element, dict):
            raise TypeError(
                f"A dataset or iterable source must yield dicts with keys {list(keys)}, got "
                f"{type(element).__name__}."
            )
        missing = [k for k in keys if k not in element]
        if missing:
            raise KeyError(f"The data has no {missing} (it has {sorted(element)}).")
        single = np.ndim(element[image_key]) == 3
        for k in keys:
            value = np.asarray(keras.ops.convert_to_numpy(element[k]))
            pending[k].append(value[None] if single else value)
        count += 1 if single else _rows(element[image_key])
        while count >= batch_size:
            merged = {k: _concatenate(v, k) for k, v in pending.items()}
            yield {k: v[:batch_size] for k, v in merged.items()}
            pending = collections.defaultdict(
                list, {k: [v[batch_size:]] for k, v in merged.items()}
            )
            count -= batch_size
    if count:
        yield {k: _concatenate(v, k) for k, v in pending.items()}


def progress(total, verbose, unit="batch"):
    """A Progbar (target may be None) or None when quiet."""
    return keras.utils.Progbar(total, unit_name=unit) if verbose else None


def image_batches(images, values, keys, batch_size, verbose, what):
    """The evaluators' loop over their data: (images, values) numpy batches of at most
    `batch_size` rows, with a progress bar when `verbose`.

    Args:
        images: an (N, H, W, 3) array with `values`, or a source of dict batches (a dict of
            arrays, a `tf.data.Dataset`, an iterable) with both `keys`; then `values` is None.
        values: one value per image (labels, captions, masks), or None.
        keys: (image key, value key) of a source.
        what: how an error names one image's value, e.g. "exactly one label".

    The arguments are checked at once; the batches raise ValueError when one has not one
    value per image, and when there are no images at all.
    """
    batch_size = positive_int(batch_size, "batch_size")
    source = source_from(images, (values,), keys)
    return _image_batches(source, keys, batch_size, verbose, what)


def _image_batches(source, keys, batch_size, verbose, what):
    image_key, value_key = keys
    total = num_rows(source, image_key)
    bar = progress(None if total is None else -(-total // batch_size), verbose, "image batch")
    count = 0
    for batch in batches(source, keys, batch_size):
        images, values = batch[image_key], batch[value_key]
        if len(values) != len(images):
            raise ValueError(
                f"Every image needs {what}: a batch has {len(images)} images and "
                f"{len(values)} {value_key!r} rows."
            )
        yield images, values
        count += len(images)
        if bar is not None:
            bar.add(1)
    if not count:
        raise ValueError("No images to evaluate.")


# ---------------------------------------------------------------------- model calls
_CACHE = weakref.WeakKeyDictionary()


def _compile(model, fn):
    backend = keras.backend.backend()
    ref = weakref.ref(model)
    if backend == "jax":
        import jax

        variables = list(model.variables)

        def pure(values, *args):
            mapping = list(zip(variables, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return fn(ref(), *args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda *args: fn(ref(), *args), reduce_retracing=True)
    if backend == "torch":
        import torch

        def no_grad(*args):
            with torch.no_grad():
                return fn(ref(), *args)

        return no_grad
    return lambda *args: fn(ref(), *args)


def model_fn(model, name, fn):
    """`fn(model, *arrays)` as a compiled numpy -> numpy function (floats as float32), cached
    per model and `name` (which must name everything static about `fn`)."""
    if isinstance(model, keras.Model):
        cache = _CACHE.setdefault(model, {})
        if name not in cache:
            cache[name] = _compile(model, fn)
        compiled = cache[name]
    else:

        def compiled(*args):
            return fn(model, *args)

    def call(*args):
        out = np.asarray(keras.ops.convert_to_numpy(compiled(*args)))
        integer = np.issubdtype(out.dtype, np.integer) or out.dtype == bool
        return out if integer else out.astype(np.float32)  # float16, bfloat16 -> float32

    return call


def _encode_image(model, images):
    return model.encode_image(images)


def _encode_text(model, ids):
    return model.encode_text(ids)


def check_finite(values, what):
    """`values`, or a clear error when any is NaN or infinite (NaN scores compare False, which
    would silently count as hits)."""
    if not np.all(np.isfinite(values)):
        raise FloatingPointError(
            f"The model produced non-finite {what} (NaN or inf): diverged weights, or token "
            "ids outside the text tower's vocabulary."
        )
    return values


def check_token_ids(model, ids):
    vocabulary = getattr(getattr(model, "text_encoder", None), "vocabulary_size", None)
    if ids.size and (ids.min() < 0 or (vocabulary is not None and ids.max() >= vocabulary)):
        raise ValueError(
            f"Token ids must be in [0, {vocabulary}) for this model's text tower; the tokenizer "
            f"gave [{ids.min()}, {ids.max()}]. Is it the tokenizer the model was trained with?"
        )
    return ids


def embed_images(model, images, batch_size=256):
    """L2-normalised (N, J) numpy image embeddings of one array of images (any size)."""
    batch_size = positive_int(batch_size, "batch_size")
    encode = model_fn(model, "encode_image", _encode_image)
    size = image_size(model)
    images = _stack(images, "image")
    if not len(images):
        raise ValueError("No images to embed: embed_images got an empty array.")
    outputs = [
        encode(as_float_images(images[start : start + batch_size], size))
        for start in range(0, len(images), batch_size)
    ]
    return check_finite(np.concatenate(outputs), "image embeddings")


def embed_texts(model, tokenizer, texts, batch_size=256, verbose=False):
    """L2-normalised (N, J) numpy text embeddings of a list of str."""
    batch_size = positive_int(batch_size, "batch_size")
    encode = model_fn(model, "encode_text", _encode_text)
    texts = [as_text(t) for t in texts]
    if not texts:
        raise ValueError("No texts to embed: embed_texts got an empty list.")
    bar = progress(-(-len(texts) // batch_size), verbose and len(texts) > batch_size, "text batch")
    outputs = []
    for start in range(0, len(texts), batch_size):
        ids = check_token_ids(model, tokenize(tokenizer, texts[start : start + batch_size]))
        outputs.append(encode(ids))
        if bar is not None:
            bar.add(1)
    return check_finite(np.concatenate(outputs), "text embeddings")
