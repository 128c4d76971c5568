"""Value checks at the places where data enters: free in the training step.

Batches are checked on the host where they are made (the tokenizer's output, the
sources' arrays); these helpers hold the messages, so that every entry point says the
same thing. None of them runs inside a compiled step.
"""

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
    if not np.issubdtype(ids.dtype, np.integer):
        if (
            np.issubdtype(ids.dtype, np.floating)
            and np.all(np.isfinite(ids))
            and np.all(ids == np.round(ids))
        ):
            pass  # integer-valued floats convert exactly
        else:
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
    return tokenizer
