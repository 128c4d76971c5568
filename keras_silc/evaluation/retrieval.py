"""Image-text retrieval Recall@K both ways, as big_vision's retrieval evaluators
(`big_vision/evaluators/proj/image_text/retrieval.py`, `image_text_retrieval.py`), with several
captions per image (COCO, Flickr30k):

- image -> text: an image query is a hit at K when any of its captions is among the K captions
  most similar to it;
- text -> image: a caption query is a hit at K when its image is among the K most similar images.

Similarities are cosines of the L2-normalised embeddings, computed in row chunks so that the
(images x captions) matrix never has to exist at once. Exact ties count against the query.
"""

import numpy as np

from keras_silc.checks import positive_ints
from keras_silc.checks import resolve_tokenizer
from keras_silc.evaluation.common import as_text
from keras_silc.evaluation.common import embed_images
from keras_silc.evaluation.common import embed_texts
from keras_silc.evaluation.common import image_batches

# Scores within this of a query's own score count as ties (one chunk's matmul and a row dot
# product round differently).
_TIE = 1e-6


def _ranks(similarity_rows, num_images, caption_owner, own_scores, chunk=1024):
    """(image ranks (N,), caption ranks (M,)): how many wrong candidates score at least as
    high as the best right one. `similarity_rows(start, stop)` gives rows of the (N, M) matrix."""
    image_rank = np.zeros(num_images, np.int64)
    caption_rank = np.zeros(len(caption_owner), np.int64)
    for start in range(0, num_images, chunk):
        stop = min(start + chunk, num_images)
        similarity = similarity_rows(start, stop)
        mine = caption_owner[None, :] == np.arange(start, stop)[:, None]
        best_own = np.where(mine, similarity, -np.inf).max(axis=1, initial=-np.inf)
        image_rank[start:stop] = np.sum((similarity >= best_own[:, None]) & ~mine, axis=1)
        caption_rank += np.sum((similarity >= own_scores[None, :] - _TIE) & ~mine, axis=0)
    return image_rank, caption_rank


def _recalls(image_rank, caption_rank, ks):
    results = {}
    for k in ks:
        results[f"i2t_recall@{k}"] = float(np.mean(image_rank < k))
    for k in ks:
        results[f"t2i_recall@{k}"] = float(np.mean(caption_rank < k))
    return results


def recall_at_k(similarity, caption_owner, ks=(1, 5, 10)):
    """Recall@K of a similarity matrix (N images, M captions); caption_owner (M,) is the
    index of each caption's image."""
    similarity = np.asarray(similarity, np.float64)
    caption_owner = np.asarray(caption_owner)
    ks = positive_ints(ks, "ks")
    own = similarity[caption_owner, np.arange(len(caption_owner))]
    ranks = _ranks(lambda a, b: similarity[a:b], len(similarity), caption_owner, own + _TIE)
    return _recalls(*ranks, ks)


def caption_groups(captions):
    """A list (one per image) of lists of non-empty str captions."""
    groups = []
    for entry in captions:
        if isinstance(entry, str | bytes | np.str_ | np.bytes_) or np.ndim(entry) == 0:
            entry = [entry]
        groups.append([as_text(c) for c in np.ravel(np.asarray(entry, dtype=object)) if c])
    return groups


def retrieval(
    model,
    tokenizer,
    images,
    captions=None,
    ks=(1, 5, 10),
    batch_size=256,
    verbose=False,
    image_key="image",
    caption_key="caption",
):
    """{"i2t_recall@K", "t2i_recall@K"} for K in `ks`.

    Args:
        model: a `SilcModel` (anything with `encode_image` / `encode_text`).
        tokenizer: a callable from a list of str to (N, T) token ids, or None for
            `model.tokenizer`.
        images: (N, H, W, 3) uint8 or [0, 1] float images, or a source of dict batches (dict of
            arrays, `tf.data.Dataset`, iterable) with `image_key` and `caption_key`.
        captions: N str, or N lists / an (N, C) array of str (empty strings are skipped):
            the captions of each image.
        ks: the K of Recall@K (an int or a sequence of ints).
    """
    tokenizer = resolve_tokenizer(model, tokenizer)
    ks = positive_ints(ks, "ks")
    if isinstance(captions, str | bytes):
        raise ValueError(
            "captions must hold one entry per image (a str or a list of str each), got one "
            "string; for a single image pass [caption]."
        )
    if captions is not None and not isinstance(captions, np.ndarray):
        captions = _ragged(captions)
    data = image_batches(
        images, captions, (image_key, caption_key), batch_size, verbose, "its captions"
    )
    image_embeddings, groups = [], []
    for batch_images, batch_captions in data:
        image_embeddings.append(embed_images(model, batch_images, batch_size))
        groups.extend(caption_groups(batch_captions))
    empty = [i for i, g in enumerate(groups) if not g]
    if empty:
        raise ValueError(f"Images {empty[:10]} have no (non-empty) caption.")
    image_embeddings = np.concatenate(image_embeddings)
    flat = [caption for group in groups for caption in group]
    owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    text_embeddings = embed_texts(model, tokenizer, flat, batch_size, verbose)
    own = np.sum(image_embeddings[owner] * text_embeddings, axis=1)
    ranks = _ranks(
        lambda a, b: image_embeddings[a:b] @ text_embeddings.T,
        len(image_embeddings),
        owner,
        own,
    )
    return _recalls(*ranks, ks)


def _ragged(captions):
    """A 1-d object array of per-image captions (a str or a list of str each)."""
    out = np.empty(len(captions), dtype=object)
    for i, c in enumerate(captions):
        out[i] = c if isinstance(c, str | bytes) else list(c)
    return out
