"""Building blocks against numpy references and a peer library (jax.image)."""

import math

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_silc.layers import DistillationHead
from keras_silc.layers import HeadBatchNormalization
from keras_silc.layers import MAPHead
from keras_silc.layers import MultiHeadAttention
from keras_silc.layers import PositionEmbedding2D
from keras_silc.layers import TransformerBlock
from keras_silc.layers import WeightNormalizedDense
from keras_silc.layers.position_embedding import bicubic_resize_matrix
from keras_silc.layers.transformer import build_trunk
from keras_silc.layers.transformer import run_trunk
from keras_silc.layers.transformer import transformer_trunk
from keras_silc.models.text_encoder import TextEncoder
from keras_silc.models.vision_encoder import VisionEncoder


def _roundtrip(layer, *inputs):
    """from_config(get_config()) rebuilds the layer; same weights give same outputs."""
    expected = to_numpy(layer(*inputs))
    clone = layer.__class__.from_config(layer.get_config())
    if not clone.built:
        clone.build(*[np.shape(x) for x in inputs])
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(clone(*inputs)), expected, atol=1e-6)


@pytest.mark.parametrize("in_size,out_size", [(16, 6), (4, 2), (14, 16), (8, 12), (7, 7)])
def test_resize_matrix_matches_jax_image_resize(in_size, out_size):
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(0).normal(size=(in_size, in_size)).astype(np.float32)
    reference = np.asarray(jax.image.resize(x, (out_size, out_size), "bicubic", antialias=True))
    m = bicubic_resize_matrix(in_size, out_size)
    np.testing.assert_allclose(m @ x @ m.T, reference, atol=2e-6)


def test_position_embedding_resizes_to_any_grid():
    layer = PositionEmbedding2D(4)
    tokens = np.zeros((2, 16, 8), np.float32)
    native = to_numpy(layer(tokens, grid=(4, 4)))
    np.testing.assert_array_equal(native[0], to_numpy(layer.embeddings))
    small = to_numpy(layer(np.zeros((1, 4, 8), np.float32), grid=(2, 2)))[0]
    table = to_numpy(layer.embeddings).reshape(4, 4, 8)
    m = bicubic_resize_matrix(4, 2)
    expected = np.einsum("ih,jw,hwd->ijd", m, m, table).reshape(4, 8)
    np.testing.assert_allclose(small, expected, atol=1e-6)


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _attention_numpy(layer, query, value, key_mask=None, causal=False):
    def dense(sub, x):
        return x @ to_numpy(sub.kernel) + to_numpy(sub.bias)

    n, t, d = query.shape
    h = layer.num_heads
    q = dense(layer.query, query).reshape(n, t, h, d // h)
    k = dense(layer.key, value).reshape(n, value.shape[1], h, d // h)
    v = dense(layer.value, value).reshape(n, value.shape[1], h, d // h)
    logits = np.einsum("nthd,nshd->nhts", q, k) / np.sqrt(d // h)
    allowed = np.ones(logits.shape, bool)
    if key_mask is not None:
        allowed &= key_mask[:, None, None, :]
    if causal:
        allowed &= np.tril(np.ones((t, value.shape[1]), bool))[None, None]
    logits = np.where(allowed, logits, -1e9)
    out = np.einsum("nhts,nshd->nthd", _softmax(logits), v).reshape(n, t, d)
    return dense(layer.output_dense, out)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_numpy(causal):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    layer = MultiHeadAttention(2, causal=causal)
    got = to_numpy(layer(x, key_mask=mask))
    np.testing.assert_allclose(got, _attention_numpy(layer, x, x, mask, causal), atol=1e-5)


def test_map_head_dense_path_equals_pooling_of_a_single_token():
    # Attention over one token returns that token's value path, so the dense
    # features of a token are exactly what pooling that token alone gives.
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(3, 4, 8)).astype(np.float32)
    head = MAPHead(num_heads=2, mlp_dim=16)
    dense = to_numpy(head.dense(tokens))
    for i in range(4):
        pooled = to_numpy(head(tokens[:, i : i + 1]))
        np.testing.assert_allclose(dense[:, i], pooled, atol=1e-5)
    _roundtrip(head, tokens)


def test_transformer_block_roundtrip():
    x = np.random.default_rng(2).normal(size=(2, 3, 8)).astype(np.float32)
    _roundtrip(TransformerBlock(2, 16), x)


def _layer_norm_numpy(layer, x):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    normed = (x - mean) / np.sqrt(var + layer.epsilon)
    return normed * to_numpy(layer.gamma) + to_numpy(layer.beta)


def _block_numpy(block, x, key_mask, causal):
    def dense(sub, x):
        return x @ to_numpy(sub.kernel) + to_numpy(sub.bias)

    h = _layer_norm_numpy(block.norm1, x)
    x = x + _attention_numpy(block.attention, h, h, key_mask, causal)
    h = dense(block.mlp.fc1, _layer_norm_numpy(block.norm2, x))
    gelu = 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))
    return x + dense(block.mlp.fc2, gelu)


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_trunk_matches_numpy_with_and_without_remat(causal):
    """The trunk of both towers: every block, then the final LayerNorm (its own epsilon)."""
    blocks, final_norm, map_head = transformer_trunk(
        2, 2, 16, causal=causal, layer_norm_epsilon=1e-6, final_norm_epsilon=1e-3
    )
    assert [b.name for b in blocks] == ["block_0", "block_1"] and map_head is None
    assert final_norm.name == "final_norm" and final_norm.epsilon == 1e-3
    build_trunk(8, blocks, final_norm)
    rng = np.random.default_rng(4)
    for layer in [*blocks, final_norm]:
        for weight in layer.weights:
            weight.assign(rng.normal(scale=0.5, size=weight.shape).astype(np.float32))
    x = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    expected = x
    for block in blocks:
        expected = _block_numpy(block, expected, mask, causal)
    expected = _layer_norm_numpy(final_norm, expected)
    for remat in (False, True):
        got = to_numpy(run_trunk(blocks, final_norm, x, key_mask=mask, remat=remat))
        np.testing.assert_allclose(got, expected, atol=1e-4)
    _, _, map_head = transformer_trunk(1, 2, 16, map_head=True)
    assert isinstance(map_head, MAPHead) and map_head.name == "map_head"


def test_weight_normalized_dense_has_unit_columns():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    layer = WeightNormalizedDense(10)
    got = to_numpy(layer(x))
    v = to_numpy(layer.kernel)
    np.testing.assert_allclose(got, x @ (v / np.linalg.norm(v, axis=0)), atol=1e-5)


def test_distillation_head_logits_are_bounded():
    x = np.random.default_rng(4).normal(size=(5, 12)).astype(np.float32) * 50
    head = DistillationHead(32, hidden_dim=16, bottleneck_dim=8)
    logits = to_numpy(head(x))
    assert logits.shape == (5, 32)
    assert np.abs(logits).max() <= 1.0 + 1e-5
    assert len(head.mlp) == 3
    _roundtrip(head, x)


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def test_batch_normalized_head_matches_numpy():
    """DINO's use_bn head: Dense -> batch norm (batch statistics in training, moving ones
    at inference) -> GELU, against a numpy forward pass; also in a frozen layer."""
    keras.utils.set_random_seed(5)  # the Dense kernels too: a failure must reproduce
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 12)).astype(np.float32) + 3.0  # a shared offset, as embeddings have
    head = DistillationHead(32, hidden_dim=16, bottleneck_dim=8, batch_norm=True)
    head.build(x.shape)
    assert [norm.name for norm in head.norms] == ["mlp_0_norm", "mlp_1_norm"]
    for norm in head.norms:  # affine and moving statistics away from their initial values
        norm.gamma.assign(rng.uniform(0.5, 1.5, size=16).astype(np.float32))
        norm.beta.assign(rng.normal(size=16).astype(np.float32))
        norm.moving_mean.assign(rng.normal(size=16).astype(np.float32))
        norm.moving_variance.assign(rng.uniform(0.5, 2.0, size=16).astype(np.float32))
    weights = [(to_numpy(d.kernel), to_numpy(d.bias)) for d in head.mlp]
    norms = [
        [to_numpy(v) for v in (n.gamma, n.beta, n.moving_mean, n.moving_variance)]
        for n in head.norms
    ]
    prototypes = to_numpy(head.prototypes.kernel)
    prototypes = prototypes / np.linalg.norm(prototypes, axis=0)

    def reference(training):
        h, means = x.astype(np.float64), []
        for i, (kernel, bias) in enumerate(weights):
            h = h @ kernel + bias
            if i < 2:
                gamma, beta, moving_mean, moving_variance = norms[i]
                mean, var = (h.mean(0), h.var(0)) if training else (moving_mean, moving_variance)
                means.append(h.mean(0))
                h = _gelu((h - mean) / np.sqrt(var + 1e-5) * gamma + beta)
        h = h / np.linalg.norm(h, axis=-1, keepdims=True)
        return h @ prototypes, means

    expected, _ = reference(training=False)
    np.testing.assert_allclose(to_numpy(head(x)), expected, atol=1e-5)
    expected, batch_means = reference(training=True)
    head.trainable = False  # the EMA teacher's case: frozen, yet batch statistics
    np.testing.assert_allclose(to_numpy(head(x, training=True)), expected, atol=1e-5)
    for norm, (_, _, old_mean, _), batch_mean in zip(head.norms, norms, batch_means, strict=True):
        np.testing.assert_allclose(
            to_numpy(norm.moving_mean), 0.9 * old_mean + 0.1 * batch_mean, rtol=1e-5, atol=1e-6
        )
    # Batch statistics: an offset that the whole batch shares does not reach the bottleneck.
    offset = rng.normal(size=(1, 12)).astype(np.float32) * 10
    np.testing.assert_allclose(
        to_numpy(head.bottleneck(x + offset, training=True)),
        to_numpy(head.bottleneck(x, training=True)),
        atol=1e-4,  # float32 cancellation of the large shared part
    )
    head.trainable = True
    _roundtrip(head, x)
    _roundtrip(HeadBatchNormalization(momentum=0.5, epsilon=1e-3), x)
    with pytest.raises(ValueError, match="batch_norm=True needs a hidden layer"):
        DistillationHead(8, num_layers=1, batch_norm=True)


def test_batch_statistics_survive_a_large_shared_offset():
    """The batch variance of activations whose shared offset is large against their
    spread, against numpy in float64: E[x^2] - E[x]^2 in float32 (PyTorch's
    `ops.moments`) is off by whole percents here."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(64, 8)) * 0.5 + 1000.0).astype(np.float32)
    norm = HeadBatchNormalization()
    y = to_numpy(norm(x, training=True))
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    np.testing.assert_allclose(y, expected, atol=2e-3)
    np.testing.assert_allclose(to_numpy(norm.moving_variance), 0.9 + 0.1 * x64.var(0), rtol=1e-4)


def test_vision_encoder_shapes_and_dense_features():
    encoder = VisionEncoder(
        image_size=32, patch_size=8, width=16, depth=1, num_heads=2, output_dim=12
    )
    images = np.random.default_rng(5).random((2, 32, 32, 3)).astype(np.float32)
    assert tuple(encoder(images).shape) == (2, 12)
    assert tuple(encoder(images[:, :16, :24]).shape) == (2, 12)  # any multiple of the patch
    assert tuple(encoder.dense_features(images).shape) == (2, 4, 4, 12)
    assert tuple(encoder.dense_features(images, source="tokens").shape) == (2, 4, 4, 12)
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        encoder(images[:, :20, :20])
    _roundtrip(encoder, images)


@pytest.mark.parametrize("pooling", ["eos", "mean", "map", "first"])
def test_text_encoder_ignores_padding(pooling):
    encoder = TextEncoder(
        vocabulary_size=50, max_length=8, width=16, depth=2, num_heads=2, pooling=pooling
    )
    ids = np.array([[5, 9, 3, 7, 0, 0, 0, 0]], np.int32)
    padded = to_numpy(encoder(ids))
    trimmed = to_numpy(encoder(ids[:, :4]))
    np.testing.assert_allclose(padded, trimmed, atol=1e-5)
    _roundtrip(encoder, ids)


def test_text_encoder_eos_pooling_reads_the_eos_token():
    encoder = TextEncoder(
        vocabulary_size=50,
        max_length=6,
        width=16,
        depth=1,
        num_heads=2,
        causal=True,
        pooling="eos",
        eos_token_id=2,
    )
    ids = np.array([[5, 9, 2, 7, 4, 0]], np.int32)
    # Causal attention: the EOS output depends only on tokens up to it.
    np.testing.assert_allclose(to_numpy(encoder(ids)), to_numpy(encoder(ids[:, :3])), atol=1e-5)
    changed = ids.copy()
    changed[0, 1] = 11
    assert np.abs(to_numpy(encoder(changed)) - to_numpy(encoder(ids))).max() > 1e-4


def test_text_encoder_rejects_long_inputs():
    encoder = TextEncoder(vocabulary_size=50, max_length=4, width=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="max_length=4"):
        encoder(np.ones((1, 6), np.int32))


def test_layers_follow_mixed_precision_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        encoder = VisionEncoder(image_size=16, patch_size=8, width=16, depth=1, num_heads=2)
        out = encoder(np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32))
        assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
        assert encoder.patch_embedding.kernel.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
