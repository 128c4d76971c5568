"""Zero-shot classification with prompt ensembling, as big_vision's discriminative classifier
(`big_vision/evaluators/proj/image_text/discriminative_classifier.py`) evaluates it.

Each class name fills every prompt template; the template embeddings (L2-normalised by the
text tower) are averaged per class and normalised again; an image's class is the one with the
highest cosine similarity. Exact ties count against the image (big_vision's argmax would pick
the lowest class index), so a collapsed model scores 0 and not the frequency of class 0.
"""

import warnings

import numpy as np

from keras_silc.checks import positive_ints
from keras_silc.checks import repeats
from keras_silc.checks import resolve_tokenizer
from keras_silc.checks import string_list
from keras_silc.evaluation.common import embed_images
from keras_silc.evaluation.common import embed_texts
from keras_silc.evaluation.common import image_batches
from keras_silc.evaluation.common import l2_normalize

# A short ensemble in the style of CLIP's / big_vision's ImageNet prompts.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a picture of a {}.",
    "there is a {}.",
)


def class_embeddings(
    model, tokenizer, class_names, templates=DEFAULT_TEMPLATES, batch_size=256, verbose=False
):
    """(C, J) numpy class embeddings: the renormalised mean of the normalised embeddings of
    every template filled with the class name.

    Args:
        model: a `SilcModel` (or anything with `encode_text`).
        tokenizer: a callable from a list of str to (N, T) token ids, or None to use
            `model.tokenizer`.
        class_names: C class names.
        templates: prompt templates with one "{}" each (default: `DEFAULT_TEMPLATES`).
    """
    tokenizer = resolve_tokenizer(model, tokenizer)
    templates = prompt_templates(templates)
    class_names = string_list(class_names, "class_names", "class names")
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = l2_normalize(embed_texts(model, tokenizer, prompts, batch_size, verbose))
    embeddings = embeddings.reshape(len(class_names), len(templates), -1).mean(axis=1)
    return l2_normalize(embeddings)


def prompt_templates(templates):
    """A tuple of templates with one "{}" each; one str is one template, None or empty the
    bare class name."""
    if isinstance(templates, str):
        templates = (templates,)
    templates = tuple(templates) if templates else ("{}",)
    for template in templates:
        if not isinstance(template, str) or "{}" not in template:
            raise ValueError(f"Prompt template {template!r} has no '{{}}' for the class name.")
    return templates


def true_class_rank(scores, labels):
    """How many other classes score at least as high as the true class (0 = correct)."""
    labels = np.asarray(labels)
    true = scores[np.arange(len(scores)), labels]
    return np.sum(scores >= true[:, None], axis=1) - 1


def one_label_each(labels):
    """(N,) labels of a batch's (N,) or (N, 1) label rows; a ValueError for more."""
    flat = np.ravel(labels)
    if len(flat) != len(labels):
        raise ValueError(
            f"Every image needs exactly one label; got labels of shape {np.shape(labels)}."
        )
    return flat


def class_indices(labels, what="labels", fraction_hint=""):
    """(N,) int64 class indices of integer (or integer-valued float) labels; a ValueError
    that says how to fix names or fractions (`fraction_hint` is added to the latter)."""
    labels = np.asarray(labels)
    example = f" such as {labels.flat[0].item()!r}" if labels.size else ""
    if labels.dtype.kind in "USO":
        raise ValueError(
            f"{what} must be integer class indices, got {labels.dtype} values{example}. Map "
            "class names to indices first, e.g. [class_names.index(name) for name in names]."
        )
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be integer class indices, got dtype {labels.dtype}.")
    whole = np.isfinite(labels) & (labels == np.round(labels)) if labels.dtype.kind == "f" else None
    if whole is not None and not whole.all():
        raise ValueError(
            f"{what} must be integer class indices, got {labels[~whole].flat[0].item()!r}."
            f"{fraction_hint}"
        )
    return labels.astype(np.int64)


def check_labels(labels, num_classes, what="labels"):
    labels = class_indices(labels, what)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{what} must be in [0, {num_classes}) for {num_classes} classes; got values in "
            f"[{labels.min()}, {labels.max()}]."
        )
    return labels.astype(np.int64)


def _warn_about_repeated_names(class_names):
    """Warns where two classes share a name: they share an embedding, so they tie and the
    images of both count as wrong (CLIP's ImageNet names repeat "missile" and "sunglasses";
    open_clip's argmax gives such ties to the lower index)."""
    found = [f"{name!r} at {first} and {index}" for name, first, index in repeats(class_names)]
    if found:
        warnings.warn(
            f"class_names repeats {', '.join(found)}: classes of the same name tie, and a tie "
            "counts against the image, so their images score as wrong at top-1. Give each "
            "class its own name to tell them apart.",
            stacklevel=3,
        )


def zero_shot_classification(
    model,
    tokenizer,
    images,
    labels=None,
    class_names=None,
    templates=DEFAULT_TEMPLATES,
    batch_size=256,
    ks=(1, 5),
    verbose=False,
    image_key="image",
    label_key="label",
):
    """Zero-shot top-k accuracy: {"top1": ..., "top5": ...} (top-k only for k <= C).

    Args:
        model: a `SilcModel` (anything with `encode_image` / `encode_text`).
        tokenizer: a callable from a list of str to (N, T) token ids, or None for
            `model.tokenizer`.
        images: (N, H, W, 3) uint8 or [0, 1] float images (resized to the model's size), or a
            source of batches: a dict of arrays, a `tf.data.Dataset` or an iterable of dicts
            with `image_key` and `label_key` (then `labels=None`).
        labels: (N,) int class indices in [0, C) (names: map them with
            `class_names.index`).
        class_names: the C class names, in label order (a list, even for one class).
        templates: prompt templates (or one), averaged per class.
        ks: the top-k accuracies to report (an int or a sequence of ints).
    """
    class_names = string_list(class_names, "class_names", "class names")
    _warn_about_repeated_names(class_names)
    ks = positive_ints(ks, "ks")
    data = image_batches(
        images, labels, (image_key, label_key), batch_size, verbose, "exactly one label"
    )
    classes = class_embeddings(model, tokenizer, class_names, templates, verbose=verbose)
    ks = [k for k in ks if k <= len(class_names)]
    correct, count = np.zeros(len(ks)), 0
    for batch_images, batch_labels in data:
        batch_labels = check_labels(one_label_each(batch_labels), len(class_names))
        scores = embed_images(model, batch_images, batch_size) @ classes.T
        rank = true_class_rank(scores, batch_labels)
        correct += [np.sum(rank < k) for k in ks]
        count += len(rank)
    return {f"top{k}": float(c / count) for k, c in zip(ks, correct, strict=True)}
