"""Zero-shot segmentation, the paper's protocol: dense features from the MAP head's value
path (option: the last block's tokens), cosine similarity with prompt-averaged class text
embeddings, bilinear upsampling to the mask size, argmax, no post-refinement. mIoU is over the
classes present, without the background class by default.

Masks use 0 for background and c + 1 for class c.
"""

import keras
import numpy as np

from keras_silc.evaluation.common import as_float_images
from keras_silc.evaluation.common import image_size
from keras_silc.evaluation.zero_shot import DEFAULT_TEMPLATES
from keras_silc.evaluation.zero_shot import class_embeddings


def confusion_matrix(truth, prediction, num_classes, ignore=None):
    """(num_classes, num_classes) counts, rows = truth; pixels where truth == ignore skipped."""
    truth, prediction = np.ravel(truth).astype(np.int64), np.ravel(prediction).astype(np.int64)
    keep = truth != ignore if ignore is not None else np.ones_like(truth, bool)
    index = truth[keep] * num_classes + prediction[keep]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(confusion):
    """Per-class IoU = TP / (TP + FP + FN); NaN where the class never occurs."""
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def _scores(model, classes, images, source, out_size):
    features = model.dense_image_features(images, source=source)  # (N, h, w, J)
    similarity = keras.ops.einsum("nhwj,cj->nhwc", features, keras.ops.convert_to_tensor(classes))
    similarity = keras.ops.image.resize(similarity, out_size, interpolation="bilinear")
    return keras.ops.convert_to_numpy(keras.ops.argmax(similarity, axis=-1))


def segment(
    model,
    tokenizer,
    images,
    class_names,
    templates=DEFAULT_TEMPLATES,
    source="map_values",
    background=None,
    out_size=None,
    batch_size=64,
):
    """Predicted label maps (N, H, W): c + 1 for class c, 0 where `background` (a prompt
    name such as "background") wins; without `background` every pixel gets a class."""
    images_np = np.asarray(images)
    out_size = out_size or images_np.shape[1:3]
    names = list(class_names) + ([background] if background else [])
    classes = class_embeddings(model, tokenizer, names, templates)
    size = image_size(model)
    maps = []
    for start in range(0, len(images_np), batch_size):
        batch = as_float_images(images_np[start : start + batch_size], size)
        maps.append(_scores(model, classes, batch, source, tuple(out_size)))
    labels = np.concatenate(maps) + 1
    if background:
        labels[labels == len(names)] = 0
    return labels.astype(np.int32)


def zero_shot_segmentation(
    model,
    tokenizer,
    images,
    masks,
    class_names,
    templates=DEFAULT_TEMPLATES,
    source="map_values",
    background="ignore",
    background_name="background",
    batch_size=64,
):
    """{"miou", "pixel_accuracy", "iou/<class>"...} over all images.

    background="ignore": predict among the C classes and score pixels whose truth is not
    background (mIoU without background, the paper's number). "include": add a background
    prompt and score every pixel over C + 1 classes.
    """
    masks = np.asarray(masks)
    if len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks.")
    if background not in ("ignore", "include"):
        raise ValueError(f"background must be 'ignore' or 'include', got {background!r}.")
    num_classes = len(class_names) + 1
    if masks.max() >= num_classes:
        raise ValueError(f"Mask values must be in [0, {num_classes}) (0 = background).")
    predictions = segment(
        model,
        tokenizer,
        images,
        class_names,
        templates,
        source,
        background=background_name if background == "include" else None,
        out_size=masks.shape[1:3],
        batch_size=batch_size,
    )
    ignore = 0 if background == "ignore" else None
    confusion = confusion_matrix(masks, predictions, num_classes, ignore=ignore)
    iou = iou_from_confusion(confusion)
    scored = iou if background == "include" else iou[1:]
    names = (["background"] if background == "include" else []) + list(class_names)
    results = {
        "miou": float(np.nanmean(scored)) if np.any(~np.isnan(scored)) else 0.0,
        "pixel_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
    }
    for name, value in zip(names, scored, strict=True):
        if not np.isnan(value):
            results[f"iou/{name}"] = float(value)
    return results
