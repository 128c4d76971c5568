"""Losses against hand-written numpy formulas."""

import numpy as np
from conftest import gradient
from conftest import to_numpy

from keras_silc import losses


def _unit(rng, *shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_clip_loss_matches_numpy():
    rng = np.random.default_rng(0)
    img, txt = _unit(rng, 6, 8), _unit(rng, 6, 8)
    scale = 12.5
    logits = scale * img @ txt.T
    expected = 0.0
    for i in range(6):
        expected -= _log_softmax(logits[i])[i] / 12  # image -> text
        expected -= _log_softmax(logits[:, i])[i] / 12  # text -> image
    got = to_numpy(losses.clip_loss(img, txt, scale))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_siglip_loss_matches_numpy():
    rng = np.random.default_rng(1)
    img, txt = _unit(rng, 5, 8), _unit(rng, 5, 8)
    t, b = 10.0, -10.0
    total = 0.0
    for i in range(5):
        for j in range(5):
            z = 1.0 if i == j else -1.0
            logit = t * float(img[i] @ txt[j]) + b
            total += np.log1p(np.exp(-z * logit))  # -log_sigmoid(z * logit)
    got = to_numpy(losses.siglip_loss(img, txt, t, b))
    np.testing.assert_allclose(got, total / 5, rtol=1e-5)


def _distillation_numpy(student, teacher, center, tau_s, tau_t):
    b, num_local, _ = student.shape
    num_global = teacher.shape[1]
    total = 0.0
    for i in range(b):
        for g in range(num_global):
            p_t = np.exp(_log_softmax((teacher[i, g] - center) / tau_t))
            for j in range(num_local):
                total -= (p_t * _log_softmax(student[i, j] / tau_s)).sum()
    return total / (b * num_global * num_local)


def test_self_distillation_loss_matches_numpy():
    rng = np.random.default_rng(2)
    student = rng.uniform(-1, 1, size=(3, 4, 16)).astype(np.float32)
    teacher = rng.uniform(-1, 1, size=(3, 2, 16)).astype(np.float32)
    center = rng.uniform(-0.2, 0.2, size=(16,)).astype(np.float32)
    expected = _distillation_numpy(student, teacher, center, 0.1, 0.04)
    got = to_numpy(losses.self_distillation_loss(student, teacher, center))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Non-default temperatures are honoured.
    expected = _distillation_numpy(student, teacher, center, 0.2, 0.07)
    got = to_numpy(losses.self_distillation_loss(student, teacher, center, 0.2, 0.07))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_teacher_entropy_and_kl_monitors():
    rng = np.random.default_rng(3)
    student = rng.uniform(-1, 1, size=(2, 3, 8)).astype(np.float32)
    teacher = rng.uniform(-1, 1, size=(2, 2, 8)).astype(np.float32)
    center = np.zeros(8, np.float32)
    ce, entropy = losses.distillation_terms(student, teacher, center, 0.1, 0.04)
    p_t = np.exp(_log_softmax(teacher / 0.04))
    expected_entropy = -(p_t * np.log(p_t)).sum(-1).mean()
    np.testing.assert_allclose(to_numpy(entropy), expected_entropy, rtol=1e-5)
    # KL = CE - H >= 0, and 0 when the student reproduces the teacher exactly.
    assert to_numpy(ce) - to_numpy(entropy) > 0
    same = teacher[:, :1] * (0.1 / 0.04)
    ce_same, h_same = losses.distillation_terms(same, teacher[:, :1], center, 0.1, 0.04)
    np.testing.assert_allclose(to_numpy(ce_same), to_numpy(h_same), rtol=1e-5)


def test_no_gradient_into_teacher():
    rng = np.random.default_rng(4)
    student = rng.uniform(-1, 1, size=(2, 3, 8)).astype(np.float32)
    teacher = rng.uniform(-1, 1, size=(2, 2, 8)).astype(np.float32)
    center = np.zeros(8, np.float32)
    grad_teacher = gradient(lambda t: losses.self_distillation_loss(student, t, center), teacher)
    np.testing.assert_array_equal(grad_teacher, 0.0)
    grad_student = gradient(lambda s: losses.self_distillation_loss(s, teacher, center), student)
    assert np.abs(grad_student).max() > 0


def test_losses_compute_in_float32_for_low_precision_inputs():
    rng = np.random.default_rng(5)
    img, txt = _unit(rng, 4, 8), _unit(rng, 4, 8)
    import keras

    img16 = keras.ops.cast(img, "bfloat16")
    txt16 = keras.ops.cast(txt, "bfloat16")
    for value in (
        losses.clip_loss(img16, txt16, 10.0),
        losses.siglip_loss(img16, txt16, 10.0, -10.0),
    ):
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    student = keras.ops.cast(rng.uniform(-1, 1, (2, 3, 8)), "bfloat16")
    teacher = keras.ops.cast(rng.uniform(-1, 1, (2, 2, 8)), "bfloat16")
    value = losses.self_distillation_loss(student, teacher, np.zeros(8, np.float32))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"


def test_chunked_contrastive_losses_match_the_dense_ones_and_their_gradients():
    """Values against numpy; gradients against autodiff of the dense losses. Chunks of
    3 and 4 rows do not divide the batch of 10, so the last chunk is short."""
    rng = np.random.default_rng(2)
    img, txt = _unit(rng, 10, 8), _unit(rng, 10, 8)
    scale, bias = np.float32(7.0), np.float32(-3.0)
    logits = scale * img @ txt.T
    clip_expected = (
        -0.5
        * (np.trace(_log_softmax(logits, axis=1)) + np.trace(_log_softmax(logits, axis=0)))
        / 10
    )
    labels = 2 * np.eye(10) - 1
    siglip_expected = np.log1p(np.exp(-labels * (logits + bias))).sum() / 10
    pairs = [
        (
            lambda i, t, s: losses.clip_loss(i, t, s),
            lambda i, t, s: losses.chunked_clip_loss(i, t, s, 3),
            clip_expected,
        ),
        (
            lambda i, t, s: losses.siglip_loss(i, t, s, bias),
            lambda i, t, s: losses.chunked_siglip_loss(i, t, s, bias, 4),
            siglip_expected,
        ),
    ]
    for dense, chunked, expected in pairs:
        np.testing.assert_allclose(to_numpy(chunked(img, txt, scale)), expected, rtol=1e-5)
        for wrt in range(3):
            inputs = [img, txt, np.array(scale)]

            def at(fn, x, wrt=wrt, inputs=inputs):
                return fn(*[x if k == wrt else v for k, v in enumerate(inputs)])

            want = gradient(lambda x, d=dense: at(d, x), inputs[wrt])
            got = gradient(lambda x, c=chunked: at(c, x), inputs[wrt])
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    want = gradient(lambda b: losses.siglip_loss(img, txt, scale, b), np.array(bias))
    got = gradient(lambda b: losses.chunked_siglip_loss(img, txt, scale, b, 4), np.array(bias))
    np.testing.assert_allclose(got, want, rtol=1e-5)
