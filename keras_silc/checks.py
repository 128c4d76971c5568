"""Value checks at the places where data enters: free in the training step.

Batches are checked on the host where they are made (the tokenizer's output, the
sources' arrays); these helpers hold the messages, so that every entry point says the
same thing. None of them runs inside a compiled step.
"""

import numbers
import os

import numpy as np


def _host_array(values):
    """A numpy array of `values`, or None for symbolic tensors (traced, no values)."""
    if isinstance(values, np.ndarray):
        return values
    try:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(values))
    except Exception:  # a tracer or KerasTensor: nothing to check before it runs
        return None


def holds_integers(values):
    """Whether a numpy array holds integers: an integer dtype, or integer-valued finite
    floats (they convert exactly)."""
    if np.issubdtype(values.dtype, np.integer):
        return True
    return bool(
        np.issubdtype(values.dtype, np.floating)
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    )


def check_token_ids(token_ids, vocabulary_size, what="token ids"):
    """Raises ValueError unless `token_ids` are integers in [0, vocabulary_size).

    An id past the embedding table gives NaN under JAX (an out-of-range gather), an
    opaque IndexError under PyTorch, and a negative id wraps around; this says which.

    Args:
        token_ids: integer array (numpy, backend or tf tensor) of any shape.
        vocabulary_size: int, the rows of the text tower's token embedding.
        what: str, how the message names the ids (e.g. "batch['text']").

    Returns:
        `token_ids` unchanged.
    """
    ids = _host_array(token_ids)
    if ids is None or ids.size == 0:
        return token_ids
    if not holds_integers(ids):
        raise ValueError(f"{what} must be integers, got dtype {ids.dtype}.")
    low, high = ids.min(), ids.max()
    if low < 0:
        raise ValueError(
            f"{what} hold the negative id {int(low)}; ids must lie in [0, {vocabulary_size}) "
            "(0 is padding)."
        )
    if high >= vocabulary_size:
        raise ValueError(
            f"{what} hold the id {int(high)}, but the text tower embeds only "
            f"{vocabulary_size} tokens (ids 0..{vocabulary_size - 1}). Tokenize with the "
            "model's own tokenizer, or build the model with text={'vocabulary_size': "
            f"{int(high) + 1}}} or more."
        )
    return token_ids


def check_images(images, what="images"):
    """Raises ValueError unless float `images` are finite and in [0, 1]; uint8 passes.

    Args:
        images: array of pixels (numpy, backend or tf tensor).
        what: str, how the message names them.

    Returns:
        `images` unchanged.
    """
    pixels = _host_array(images)
    if pixels is None or pixels.size == 0 or pixels.dtype == np.uint8:
        return images
    if not np.issubdtype(pixels.dtype, np.floating):
        if np.issubdtype(pixels.dtype, np.integer):
            raise ValueError(
                f"{what} are {pixels.dtype} integers; pass uint8 pixels (0..255) or floats "
                "in [0, 1] (divide by 255)."
            )
        raise ValueError(f"{what} must be uint8 or float pixels, got dtype {pixels.dtype}.")
    finite = np.isfinite(pixels)
    if not finite.all():
        bad = int((~finite).sum())
        raise ValueError(
            f"{what} hold {bad} NaN or infinite pixel value(s) (first at index "
            f"{tuple(int(i) for i in np.argwhere(~finite)[0])}); one such pixel turns the "
            "weights into NaN in a single step. Drop or repair those images."
        )
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        hint = (
            " They look like 0..255 pixels: divide by 255 (or pass them as uint8)."
            if high > 1.0 and high <= 255.0 and low >= 0.0
            else ""
        )
        raise ValueError(
            f"{what} must be floats in [0, 1]; these range over [{low:.4g}, {high:.4g}].{hint}"
        )
    return images


IMAGE_KEYS = ("image", "global_crops", "local_crops")


def check_batch_values(batch, vocabulary_size):
    """`check_token_ids` on `batch["text"]` and `check_images` on its image keys: one call
    for a preprocessor's batch check (host arrays; symbolic tensors pass unchecked).

    Returns:
        `batch` unchanged.
    """
    if not isinstance(batch, dict):
        return batch
    if "text" in batch:
        check_token_ids(batch["text"], vocabulary_size, "batch['text']")
    for key in IMAGE_KEYS:
        if key in batch:
            check_images(batch[key], f"batch[{key!r}]")
    return batch


def check_model_inputs(inputs, where="SilcModel"):
    """Raises ValueError unless `inputs` is a dict holding "image" and/or "text", what
    `SilcModel.call` and `predict` take; a dataset or generator passes unchecked."""
    example = (
        "{'image': float images (N, H, W, 3) in [0, 1]} and/or {'text': token ids (N, T)}, "
        "e.g. model.predict({'text': model.preprocessor.tokenize(captions)}); encode_image "
        "and encode_text take the arrays themselves"
    )
    if isinstance(inputs, dict):
        if "image" not in inputs and "text" not in inputs:
            raise ValueError(f"{where} takes {example}; got a dict with {sorted(inputs)}.")
        # Host arrays are checked here, before the step: inside it they are symbolic.
        if isinstance(inputs.get("image"), np.ndarray):
            check_rank(inputs["image"], 4, f"{where}'s 'image'", "(N, H, W, 3) images")
            check_images(inputs["image"], f"{where}'s 'image'")
        if isinstance(inputs.get("text"), np.ndarray):
            check_rank(inputs["text"], 2, f"{where}'s 'text'", "(N, T) token ids")
        return
    if isinstance(inputs, (list, tuple, str, bytes)) or hasattr(inputs, "shape"):
        shape = getattr(inputs, "shape", None)
        got = f"{type(inputs).__name__}" + (f" of shape {tuple(shape)}" if shape else "")
        raise ValueError(f"{where} takes {example}; got a {got}.")


def resolve_tokenizer(owner, tokenizer=None):
    """`tokenizer`, else `owner.tokenizer` (a model's or a preprocessor's), else a
    ValueError that says how to give one."""
    tokenizer = tokenizer if tokenizer is not None else getattr(owner, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "No tokenizer: pass tokenizer= (a callable from a list of str to (N, T) int token "
            "ids with 0 as padding, e.g. keras_silc.data.SilcTokenizer.from_captions(captions, "
            "...)) or give the model one (SilcModel.from_preset(name, tokenizer=...))."
        )
    if not callable(tokenizer):
        if isinstance(tokenizer, str | bytes) or hasattr(tokenizer, "__fspath__"):
            raise ValueError(
                f"tokenizer= takes a tokenizer, not the path {str(tokenizer)!r}: load it first "
                "with keras_silc.data.SilcTokenizer.from_preset(folder) for a folder written by "
                "save_to_preset, or SilcTokenizer.from_file(path, sequence_length=...) for a "
                "SentencePiece .model or WordPiece .txt vocabulary."
            )
        raise ValueError(
            "tokenizer= must be callable (a list of str -> (N, T) int token ids), got a "
            f"{type(tokenizer).__name__}."
        )
    return tokenizer


def positive_int(value, name):
    """`value` as an int, or a ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def positive_ints(values, name):
    """A tuple of positive ints from one int or a sequence of them (`ks=1` or `ks=(1, 5)`)."""
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = (values,)
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be an int or a sequence of ints, got {values!r}.")
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} is empty; give at least one value.")
    return tuple(positive_int(v, f"every value of {name}") for v in values)


def string_list(values, name, what):
    """A list of str from a sequence of str; a single str is refused (it would be split
    into characters)."""
    if values is None:
        raise ValueError(f"{name} is required: a list of {what}.")
    if isinstance(values, str | bytes):
        raise ValueError(
            f"{name} must be a list of {what}, got the single string {values!r}; "
            f"wrap it: [{values!r}]."
        )
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty.")
    return values


def check_rank(values, rank, what, expected, hint=""):
    """Raises ValueError unless `values` (any array; symbolic shapes too) has `rank` axes."""
    shape = getattr(values, "shape", None)
    shape = np.shape(values) if shape is None else tuple(shape)
    if len(shape) != rank:
        raise ValueError(f"{what} must be {expected}; got shape {shape}.{hint}")
    return values


def size_pair(value, name):
    """(height, width) positive ints from one int (a square) or a pair of ints."""
    pair = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        pair = None if isinstance(pair, str | bytes) else tuple(pair)
    except TypeError:  # not iterable: a float, None
        pair = None
    if (
        pair is None
        or len(pair) != 2
        or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in pair
        )
    ):
        raise ValueError(
            f"{name} must be a positive int or a (height, width) pair of positive ints; "
            f"got {value!r}."
        )
    return int(pair[0]), int(pair[1])


def repeats(values):
    """[(value, index of its first occurrence, index of the repeat)] of every repeat."""
    first, found = {}, []
    for index, value in enumerate(values):
        if value in first:
            found.append((value, first[value], index))
        first.setdefault(value, index)
    return found


def check_distinct(values, name, why):
    """Raises ValueError naming the first value that `values` hold twice; `why` says what a
    repeat would break."""
    found = repeats(values)
    if found:
        value, first, index = found[0]
        raise ValueError(
            f"{name} holds {value!r} twice (at {first} and {index}); {why} Give each entry once."
        )
    return values


def check_folder_path(path, name):
    """Raises ValueError unless `path` (a str or path-like) could name a folder: not empty,
    and not an existing local file (a `gs://` path is not looked at)."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ValueError(f"{name} must be a folder path, got {path!r}.")
    if os.path.isfile(path):
        raise ValueError(f"{name} {os.fspath(path)!r} is a file; give a folder.")
    return path
