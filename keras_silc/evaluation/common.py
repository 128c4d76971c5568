"""Shared plumbing: images to the model's input, batched embeddings, the tokenizer."""

import keras
import numpy as np


def resolve_tokenizer(model, tokenizer):
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            "No tokenizer: pass tokenizer= (any callable from a list of str to (N, T) token "
            "ids, e.g. keras_silc.data.SilcTokenizer) or build the model with tokenizer=."
        )
    return tokenizer


def as_float_images(images, size=None):
    """uint8 or [0, 1] float (N, H, W, 3) -> float32 [0, 1], resized to `size` if given."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) or (N, H, W), got shape {images.shape}.")
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    images = images.astype(np.float32)
    if size is not None and images.shape[1:3] != (size, size):
        images = keras.ops.convert_to_numpy(
            keras.ops.image.resize(images, (size, size), antialias=True)
        )
    return images


def _progress(total, verbose, label):
    if not verbose or total <= 1:
        return None
    return keras.utils.Progbar(total, unit_name=label)


def batched(fn, inputs, batch_size, verbose=False, label="batch"):
    """Concatenated numpy outputs of `fn` over batches of `inputs`."""
    outputs = []
    bar = _progress(-(-len(inputs) // batch_size), verbose, label)
    for start in range(0, len(inputs), batch_size):
        outputs.append(
            np.asarray(keras.ops.convert_to_numpy(fn(inputs[start : start + batch_size])))
        )
        if bar is not None:
            bar.add(1)
    return np.concatenate(outputs, axis=0)


def image_size(model):
    return model.vision_config.get("image_size") if hasattr(model, "vision_config") else None


def embed_images(model, images, batch_size=256, verbose=False):
    """L2-normalised (N, J) numpy image embeddings."""
    size = image_size(model)
    return batched(
        lambda x: model.encode_image(as_float_images(x, size)), images, batch_size, verbose, "image"
    )


def embed_texts(model, tokenizer, texts, batch_size=256):
    """L2-normalised (N, J) numpy text embeddings of a list of str."""
    texts = list(texts)
    return batched(
        lambda t: model.encode_text(np.asarray(tokenizer(list(t)), dtype=np.int32)),
        texts,
        batch_size,
    )


def l2_normalize(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)
