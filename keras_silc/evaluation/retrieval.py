"""Image-text retrieval Recall@K, as big_vision's retrieval evaluator, with several captions
per image: an image query hits when any of its captions is in the top K; a caption query hits
when its image is in the top K."""

import numpy as np

from keras_silc.evaluation.common import embed_images
from keras_silc.evaluation.common import embed_texts
from keras_silc.evaluation.common import resolve_tokenizer


def recall_at_k(similarity, caption_owner, ks=(1, 5, 10)):
    """similarity (N images, M captions); caption_owner (M,) the image of each caption."""
    caption_owner = np.asarray(caption_owner)
    results = {}
    image_ranking = np.argsort(-similarity, axis=1)  # captions per image
    text_ranking = np.argsort(-similarity.T, axis=1)  # images per caption
    for k in ks:
        owners = caption_owner[image_ranking[:, :k]]
        hits = np.any(owners == np.arange(len(similarity))[:, None], axis=1)
        results[f"i2t_recall@{k}"] = float(np.mean(hits))
        hits = np.any(text_ranking[:, :k] == caption_owner[:, None], axis=1)
        results[f"t2i_recall@{k}"] = float(np.mean(hits))
    return results


def retrieval(model, tokenizer, images, captions, ks=(1, 5, 10), batch_size=256, verbose=False):
    """Recall@K both ways; `captions` is N strings or N lists (or an (N, C) array) of them."""
    tokenizer = resolve_tokenizer(model, tokenizer)
    groups = [[c] if isinstance(c, str) else [str(x) for x in c if str(x)] for c in list(captions)]
    if len(groups) != len(images):
        raise ValueError(f"{len(images)} images but {len(groups)} caption entries.")
    flat = [caption for group in groups for caption in group]
    owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    similarity = (
        embed_images(model, images, batch_size, verbose)
        @ embed_texts(model, tokenizer, flat, batch_size).T
    )
    return recall_at_k(similarity, owner, ks)
