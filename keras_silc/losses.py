"""SILC's losses as pure functions of tensors (big_vision style).

Every function casts its inputs to float32 first, so the softmaxes and logs stay in
float32 under mixed precision.
"""

from keras import ops


def _f32(*tensors):
    return [ops.cast(t, "float32") for t in tensors]


def clip_loss(image_embeddings, text_embeddings, logit_scale):
    """CLIP's symmetric softmax cross-entropy over the B x B similarity matrix.

    Args:
        image_embeddings: (B, J) L2-normalised image embeddings.
        text_embeddings: (B, J) L2-normalised text embeddings; row i pairs with
            image i.
        logit_scale: scalar multiplier (exp of the learned log-temperature).

    Returns:
        Scalar: the mean of the image-to-text and text-to-image cross-entropies.
    """
    image_embeddings, text_embeddings, logit_scale = _f32(
        image_embeddings, text_embeddings, logit_scale
    )
    logits = logit_scale * ops.matmul(image_embeddings, ops.transpose(text_embeddings))
    diagonal = ops.diagonal(logits)
    image_to_text = ops.logsumexp(logits, axis=1) - diagonal
    text_to_image = ops.logsumexp(logits, axis=0) - diagonal
    return 0.5 * (ops.mean(image_to_text) + ops.mean(text_to_image))


def siglip_loss(image_embeddings, text_embeddings, logit_scale, logit_bias):
    """SigLIP's pairwise sigmoid loss.

    `-sum_j log_sigmoid(z_ij * (t * <x_i, y_j> + b))` with z = +1 for matching pairs
    and -1 otherwise, summed over texts and averaged over images.

    Args:
        image_embeddings: (B, J) L2-normalised image embeddings.
        text_embeddings: (B, J) L2-normalised text embeddings.
        logit_scale: scalar t (exp of the learned t').
        logit_bias: scalar b.
    """
    image_embeddings, text_embeddings, logit_scale, logit_bias = _f32(
        image_embeddings, text_embeddings, logit_scale, logit_bias
    )
    logits = logit_scale * ops.matmul(image_embeddings, ops.transpose(text_embeddings))
    logits = logits + logit_bias
    batch_size = ops.shape(logits)[0]
    labels = 2.0 * ops.eye(batch_size, dtype="float32") - 1.0
    return -ops.sum(ops.log_sigmoid(labels * logits)) / ops.cast(batch_size, "float32")


def _over_row_blocks(images, chunk_size, body, carry):
    """Runs `carry = body(start, block, carry)` over blocks of `chunk_size` rows.

    Full blocks go through `ops.fori_loop` (a real loop, so a compiler cannot keep all
    blocks alive at once), a shorter last block through one more call.
    """
    batch_size, width = images.shape
    if batch_size is None:
        raise ValueError(
            "A chunked contrastive loss needs the batch size when the step is traced; "
            "batch the dataset with drop_remainder=True (training_dataset does)."
        )
    full = batch_size // chunk_size

    def step(index, carry):
        start = index * chunk_size
        block = ops.slice(images, (start, 0), (chunk_size, width))
        return body(start, block, carry)

    if full:
        carry = ops.fori_loop(0, full, step, carry)
    if batch_size % chunk_size:
        start = full * chunk_size
        carry = body(start, images[start:], carry)
    return carry


def _rows_update(values, start, rows):
    """values[start:start + len(rows)] = rows, with a traced `start`."""
    return ops.slice_update(values, (start,) + (0,) * (len(values.shape) - 1), rows)


def chunked_clip_loss(image_embeddings, text_embeddings, logit_scale, chunk_size):
    """`clip_loss` computed `chunk_size` rows at a time, forward and backward.

    Same value and gradients as `clip_loss`, but no (B, B) matrix is ever held: the
    forward keeps the row and column log-sum-exps, and the backward recomputes each
    (chunk_size, B) block of similarities. Memory grows linearly in B.
    """
    image_embeddings, text_embeddings, logit_scale = _f32(
        image_embeddings, text_embeddings, logit_scale
    )

    @ops.custom_gradient
    def loss_fn(images, texts, scale):
        batch = images.shape[0]

        def forward(start, block, carry):
            row_lse, column_lse = carry
            logits = scale * ops.matmul(block, ops.transpose(texts))
            row_lse = _rows_update(row_lse, start, ops.logsumexp(logits, axis=1))
            column_lse = ops.logaddexp(column_lse, ops.logsumexp(logits, axis=0))
            return row_lse, column_lse

        empty = ops.full((batch,), -float("inf"), dtype="float32")
        row_lse, column_lse = _over_row_blocks(images, chunk_size, forward, (empty, empty))
        matching = ops.sum(images * texts, axis=1)  # diagonal similarities
        loss = 0.5 * (ops.mean(row_lse) + ops.mean(column_lse)) - scale * ops.mean(matching)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args

            # dL/dlogits = (softmax over rows + softmax over columns - 2 I) / 2B.
            def backward(start, block, carry):
                d_images, d_texts, d_scale = carry
                similarity = ops.matmul(block, ops.transpose(texts))
                logits = scale * similarity
                rows = ops.slice(row_lse, (start,), (block.shape[0],))
                d_logits = ops.exp(logits - rows[:, None]) + ops.exp(logits - column_lse[None])
                d_images = _rows_update(d_images, start, scale * ops.matmul(d_logits, texts))
                d_texts = d_texts + scale * ops.matmul(ops.transpose(d_logits), block)
                return d_images, d_texts, d_scale + ops.sum(d_logits * similarity)

            zeros = ops.zeros_like(images)
            d_images, d_texts, d_scale = _over_row_blocks(
                images, chunk_size, backward, (zeros, ops.zeros_like(texts), ops.zeros(()))
            )
            d_images = d_images - 2.0 * scale * texts
            d_texts = d_texts - 2.0 * scale * images
            d_scale = d_scale - 2.0 * ops.sum(matching)
            factor = upstream / (2.0 * batch)
            return factor * d_images, factor * d_texts, factor * d_scale

        return loss, grad

    return loss_fn(image_embeddings, text_embeddings, logit_scale)


def chunked_siglip_loss(image_embeddings, text_embeddings, logit_scale, logit_bias, chunk_size):
    """`siglip_loss` computed `chunk_size` rows at a time, forward and backward; no
    (B, B) matrix is held, so memory grows linearly in B."""
    image_embeddings, text_embeddings, logit_scale, logit_bias = _f32(
        image_embeddings, text_embeddings, logit_scale, logit_bias
    )

    @ops.custom_gradient
    def loss_fn(images, texts, scale, bias):
        batch = images.shape[0]

        def block_logits(start, block):
            similarity = ops.matmul(block, ops.transpose(texts))
            rows = start + ops.arange(block.shape[0])
            labels = ops.where(rows[:, None] == ops.arange(batch)[None, :], 1.0, -1.0)
            return similarity, labels, scale * similarity + bias

        def forward(start, block, total):
            _, labels, logits = block_logits(start, block)
            return total + ops.sum(ops.log_sigmoid(labels * logits))

        total = _over_row_blocks(images, chunk_size, forward, ops.zeros(()))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args

            def backward(start, block, carry):
                d_images, d_texts, d_scale, d_bias = carry
                similarity, labels, logits = block_logits(start, block)
                # d(-log sigmoid(z l))/dl = -z sigmoid(-z l).
                d_logits = -labels * ops.sigmoid(-labels * logits)
                d_images = _rows_update(d_images, start, scale * ops.matmul(d_logits, texts))
                d_texts = d_texts + scale * ops.matmul(ops.transpose(d_logits), block)
                d_scale = d_scale + ops.sum(d_logits * similarity)
                return d_images, d_texts, d_scale, d_bias + ops.sum(d_logits)

            zeros = (ops.zeros_like(images), ops.zeros_like(texts), ops.zeros(()), ops.zeros(()))
            d_images, d_texts, d_scale, d_bias = _over_row_blocks(
                images, chunk_size, backward, zeros
            )
            factor = upstream / batch
            return factor * d_images, factor * d_texts, factor * d_scale, factor * d_bias

        return -total / batch, grad

    return loss_fn(image_embeddings, text_embeddings, logit_scale, logit_bias)


def distillation_terms(
    student_logits, teacher_logits, center, student_temperature, teacher_temperature
):
    """Cross-entropy and teacher entropy of SILC's local-to-global distillation.

    Returns (cross_entropy, teacher_entropy): the cross-entropy
    `-sum_k P_t(k) log P_s(k)` averaged over the batch and all (global, local)
    pairs, and the teacher distribution's entropy averaged over the batch and the
    global crops. Their difference is the mean KL(P_t || P_s), a collapse monitor.
    """
    student_logits, teacher_logits, center = _f32(student_logits, teacher_logits, center)
    teacher_log_probs = ops.stop_gradient(
        ops.log_softmax((teacher_logits - center) / teacher_temperature, axis=-1)
    )
    teacher_probs = ops.exp(teacher_log_probs)
    student_log_probs = ops.log_softmax(student_logits / student_temperature, axis=-1)
    num_global = ops.cast(ops.shape(teacher_logits)[1], "float32")
    num_local = ops.cast(ops.shape(student_logits)[1], "float32")
    # sum_{g,l} P_t[g] . log P_s[l] == (sum_g P_t[g]) . (sum_l log P_s[l]).
    pair_sum = ops.sum(ops.sum(teacher_probs, axis=1) * ops.sum(student_log_probs, axis=1), axis=-1)
    cross_entropy = -ops.mean(pair_sum) / (num_global * num_local)
    teacher_entropy = -ops.mean(ops.sum(teacher_probs * teacher_log_probs, axis=-1))
    return cross_entropy, teacher_entropy


def self_distillation_loss(
    student_logits,
    teacher_logits,
    center,
    student_temperature=0.1,
    teacher_temperature=0.04,
):
    """SILC's local-to-global self-distillation loss (paper eq. 2).

    `P_t = softmax((p_t - c) / tau_t)` with no gradient, `P_s = softmax(p_s / tau_s)`;
    the cross-entropy `-sum_k P_t(k) log P_s(k)` is averaged over the batch and every
    (teacher global view, student local view) pair.

    Args:
        student_logits: (B, L, K) head outputs of the student on the local crops.
        teacher_logits: (B, G, K) head outputs of the teacher on the global crops.
        center: (K,) centering buffer.
        student_temperature: float, tau_s. Defaults to 0.1.
        teacher_temperature: float, tau_t. Defaults to 0.04.
    """
    cross_entropy, _ = distillation_terms(
        student_logits, teacher_logits, center, student_temperature, teacher_temperature
    )
    return cross_entropy


def contrastive_loss(kind, image_embeddings, text_embeddings, logit_scale, logit_bias, chunk_size):
    """`kind` "clip" or "siglip", in blocks of `chunk_size` rows when the batch is larger
    (same values and gradients; None: the (B, B) matrix at once)."""
    size = image_embeddings.shape[0]
    if chunk_size and (size is None or size > chunk_size):
        if kind == "clip":
            return chunked_clip_loss(image_embeddings, text_embeddings, logit_scale, chunk_size)
        return chunked_siglip_loss(
            image_embeddings, text_embeddings, logit_scale, logit_bias, chunk_size
        )
    if kind == "clip":
        return clip_loss(image_embeddings, text_embeddings, logit_scale)
    return siglip_loss(image_embeddings, text_embeddings, logit_scale, logit_bias)
