"""Zero-shot semantic segmentation, the paper's protocol (SILC section 4.3: TCL's evaluation
without the background class, no post-refinement):

1. dense features: every patch token goes through the MAP head's value path (value and output
   projections, then the head's LayerNorm + MLP residual and the projection to the shared
   space), L2-normalised: `model.dense_image_features(images, source="map_values")`
   (`source="tokens"` reads the last encoder block instead, for comparison);
2. class embeddings: prompt-averaged, renormalised text embeddings (as zero-shot
   classification);
3. cosine similarity per patch, bilinearly upsampled to the mask's resolution, argmax over
   classes; no post-refinement (no PAMR, no CRF);
4. one confusion matrix accumulated over the whole set; IoU_c = TP / (TP + FP + FN); mIoU over
   the classes that occur (in the truth or the predictions).

Masks use 0 for background and c + 1 for class c (the Fashion scenes convention). With
`background="ignore"` (the paper's "mIoU without background") the prediction is among the C
classes and only pixels whose truth is not background are scored. With `"include"` a
background class (the prompts filled with `background_name`) competes with the others and
every pixel is scored over C + 1 classes.
"""

import keras
import numpy as np

from keras_silc.checks import check_distinct
from keras_silc.checks import positive_int
from keras_silc.checks import size_pair
from keras_silc.checks import string_list
from keras_silc.evaluation.common import as_float_images
from keras_silc.evaluation.common import check_finite
from keras_silc.evaluation.common import check_image_shape
from keras_silc.evaluation.common import image_batches
from keras_silc.evaluation.common import image_size
from keras_silc.evaluation.common import model_fn
from keras_silc.evaluation.zero_shot import DEFAULT_TEMPLATES
from keras_silc.evaluation.zero_shot import class_embeddings
from keras_silc.evaluation.zero_shot import class_indices

# Largest (images x H x W x classes) similarity block upsampled at once (float32: 128 MiB).
_MAX_SCORES = 2**25


def confusion_matrix(truth, prediction, num_classes, ignore=None):
    """(num_classes, num_classes) pixel counts, rows = truth, columns = prediction; pixels
    whose truth equals `ignore` are skipped."""
    num_classes = positive_int(num_classes, "num_classes")
    if np.shape(truth) != np.shape(prediction):
        raise ValueError(
            f"truth of shape {np.shape(truth)} but prediction of shape {np.shape(prediction)}; "
            "give one predicted label per truth pixel."
        )
    truth = np.ravel(class_indices(truth, "truth"))
    prediction = np.ravel(class_indices(prediction, "prediction"))
    if ignore is not None:
        keep = truth != ignore
        truth, prediction = truth[keep], prediction[keep]
    for what, labels in (("truth", truth), ("prediction", prediction)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise ValueError(
                f"{what} holds the label {bad}, outside [0, {num_classes}) for {num_classes} "
                f"classes. Pixels to skip: pass ignore=<their label> (ignore={ignore!r} now)."
            )
    index = truth * num_classes + prediction
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(confusion):
    """(C,) IoU = TP / (TP + FP + FN) per class; NaN where the class occurs nowhere."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def dense_scores(model, images, classes, source=None):
    """(N, h, w, C) float32 cosine similarity of every patch's dense feature with every class
    embedding (steps 1-3 above before the upsampling), as backend tensors: the zero-shot
    segmentation logits, for use inside compiled functions (see `model_fn`)."""
    features = model.dense_image_features(images, source=source)  # (N, h, w, J)
    features = keras.ops.cast(features, "float32")
    return keras.ops.einsum("nhwj,cj->nhwc", features, classes)


def _label_maps(out_size, source):
    def fn(model, images, classes):
        similarity = dense_scores(model, images, classes, source)
        similarity = keras.ops.image.resize(similarity, out_size, interpolation="bilinear")
        finite = keras.ops.all(keras.ops.isfinite(similarity), axis=-1)
        return keras.ops.where(finite, keras.ops.argmax(similarity, axis=-1), -1)

    return fn


def _predict(model, images, classes, source, out_size, batch_size):
    """(N, H, W) int argmax class indices of images (one array) against (K, J) classes."""
    fn = model_fn(model, f"segment/{source}/{out_size}", _label_maps(out_size, source))
    size = image_size(model)
    step = max(1, min(batch_size, _MAX_SCORES // (out_size[0] * out_size[1] * len(classes))))
    maps = [
        fn(as_float_images(images[start : start + step], size), classes)
        for start in range(0, len(images), step)
    ]
    maps = np.concatenate(maps).astype(np.int32)
    if maps.size and maps.min() < 0:
        check_finite(np.array([np.nan]), "dense features")
    return maps


def _check_background(background):
    if background not in ("ignore", "include"):
        raise ValueError(f"background must be 'ignore' or 'include', got {background!r}.")


def _class_names(class_names):
    class_names = string_list(class_names, "class_names", "class names")
    return check_distinct(
        class_names, "class_names", "two classes of one name share one IoU and one label."
    )


def _class_table(model, tokenizer, class_names, templates, background, background_name):
    names = list(class_names)
    if background == "include":
        if background_name in names:
            raise ValueError(
                f"background_name {background_name!r} is also a class name; with "
                "background='include' the background needs its own name: rename one."
            )
        names = [*names, background_name]
    return class_embeddings(model, tokenizer, names, templates).astype(np.float32)


def _to_labels(argmax, num_classes, background):
    """Class index -> mask convention: c + 1 for class c, 0 for the background class."""
    labels = argmax + 1
    if background == "include":
        labels[argmax == num_classes] = 0
    return labels


def segment(
    model,
    tokenizer,
    images,
    class_names,
    templates=DEFAULT_TEMPLATES,
    source=None,
    background="ignore",
    background_name="background",
    out_size=None,
    batch_size=64,
):
    """Zero-shot label maps (N, H, W) int32 in the mask convention: c + 1 for class c, and 0
    where the background prompt wins (only with `background="include"`).

    Args:
        images: (N, H, W, 3) uint8 or [0, 1] float images.
        class_names: the C class names.
        source: "map_values" (the paper), "tokens" (the last encoder block) or None
            (the MAP head's value path where the image tower has one, else tokens).
        out_size: (H, W) of the maps (or one int for square maps); default the images'
            own size.
    """
    _check_background(background)
    class_names = _class_names(class_names)
    batch_size = positive_int(batch_size, "batch_size")
    images = np.asarray(check_image_shape(images))
    if not len(images):
        raise ValueError("No images to segment: images has 0 rows.")
    out_size = size_pair(images.shape[1:3] if out_size is None else out_size, "out_size")
    classes = _class_table(model, tokenizer, class_names, templates, background, background_name)
    argmax = _predict(model, images, classes, source, out_size, batch_size)
    return _to_labels(argmax, len(class_names), background)


def zero_shot_segmentation(
    model,
    tokenizer,
    images,
    masks=None,
    class_names=None,
    templates=DEFAULT_TEMPLATES,
    source=None,
    background="ignore",
    background_name="background",
    batch_size=64,
    verbose=False,
    image_key="image",
    mask_key="mask",
):
    """{"miou", "pixel_accuracy", "iou/<class>"...} over all images (one confusion matrix).

    Args:
        model: a `SilcModel` (anything with `encode_text` / `dense_image_features`).
        tokenizer: a callable from a list of str to (N, T) token ids, or None for
            `model.tokenizer`.
        images: (N, H, W, 3) uint8 or [0, 1] float images, or a source of dict batches (dict of
            arrays, `tf.data.Dataset`, iterable) with `image_key` and `mask_key`.
        masks: (N, H, W) int: 0 background, c + 1 for class c; any resolution (the scores
            are upsampled to it).
        class_names: the C class names.
        source: "map_values" (the paper), "tokens" or None (see `segment`).
        background: "ignore" (score non-background pixels among the C classes: the paper's
            mIoU) or "include" (a background prompt class; every pixel over C + 1 classes).
        background_name: the class name put into the templates for the background.
    """
    _check_background(background)
    class_names = _class_names(class_names)
    num_labels = len(class_names) + 1
    data = image_batches(images, masks, (image_key, mask_key), batch_size, verbose, "one mask")
    classes = _class_table(model, tokenizer, class_names, templates, background, background_name)
    confusion = np.zeros((num_labels, num_labels), np.int64)
    for batch_images, batch_masks in data:
        batch_masks = np.asarray(batch_masks)
        if batch_masks.ndim == 4 and batch_masks.shape[-1] == 1:
            batch_masks = batch_masks[..., 0]
        if batch_masks.ndim != 3:
            raise ValueError(
                f"Every image needs one (H, W) mask: {len(batch_images)} images, masks of "
                f"shape {batch_masks.shape}."
            )
        out_size = size_pair(batch_masks.shape[1:3], "Every mask's (H, W)")
        # Bilinear resizing blends labels into fractions, which would be truncated.
        batch_masks = class_indices(
            batch_masks,
            "Mask values",
            " Resize masks with nearest-neighbour interpolation, never bilinear.",
        )
        if batch_masks.min() < 0 or batch_masks.max() >= num_labels:
            raise ValueError(
                f"Mask values must be in [0, {num_labels}) (0 = background, c + 1 = class c "
                f"of {len(class_names)}); got [{batch_masks.min()}, {batch_masks.max()}]."
            )
        argmax = _predict(model, batch_images, classes, source, out_size, batch_size)
        predictions = _to_labels(argmax, len(class_names), background)
        ignore = 0 if background == "ignore" else None
        confusion += confusion_matrix(batch_masks, predictions, num_labels, ignore=ignore)
    if confusion.sum() == 0:
        raise ValueError("No pixels to score (no images, or only background with 'ignore').")
    iou = iou_from_confusion(confusion)
    names = ["background", *class_names]
    if background == "ignore":
        iou, names = iou[1:], names[1:]
    results = {
        "miou": float(np.nanmean(iou)),
        "pixel_accuracy": float(np.trace(confusion) / confusion.sum()),
    }
    for name, value in zip(names, iou, strict=True):
        if not np.isnan(value):
            results[f"iou/{name}"] = float(value)
    return results
