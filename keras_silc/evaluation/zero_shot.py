"""Zero-shot classification with prompt ensembling, as big_vision evaluates it.

Each class name fills every template; the template embeddings are L2-normalised, averaged and
normalised again; an image's class is the argmax of its cosine similarity with the classes.
"""

import numpy as np

from keras_silc.evaluation.common import embed_images
from keras_silc.evaluation.common import embed_texts
from keras_silc.evaluation.common import l2_normalize
from keras_silc.evaluation.common import resolve_tokenizer

DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "there is a {}.")


def class_embeddings(model, tokenizer, class_names, templates=DEFAULT_TEMPLATES):
    """(C, J) prompt-averaged, renormalised class embeddings."""
    tokenizer = resolve_tokenizer(model, tokenizer)
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = l2_normalize(embed_texts(model, tokenizer, prompts))
    embeddings = embeddings.reshape(len(class_names), len(templates), -1).mean(axis=1)
    return l2_normalize(embeddings)


def topk_accuracy(scores, labels, k):
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def zero_shot_classification(
    model,
    tokenizer,
    images,
    labels,
    class_names,
    templates=DEFAULT_TEMPLATES,
    batch_size=256,
    verbose=False,
):
    """{"top1", "top5"} accuracy (top-k with k = min(5, C)) of zero-shot classification."""
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(
            f"labels must be in [0, {len(class_names)}) for {len(class_names)} class names; "
            f"got [{labels.min()}, {labels.max()}]."
        )
    classes = class_embeddings(model, tokenizer, class_names, templates)
    scores = embed_images(model, images, batch_size, verbose) @ classes.T
    k = min(5, len(class_names))
    return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, k)}
