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
