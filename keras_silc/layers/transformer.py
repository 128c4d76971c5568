"""Transformer building blocks shared by the image and text towers.

Pre-norm blocks as in big_vision's ViT: `x + Attn(LN(x))`, then `x + MLP(LN(x))`.
Attention goes through `keras.ops.dot_product_attention`, which uses each backend's
fused kernel where one exists. `transformer_trunk`, `build_trunk` and `run_trunk` are the
one trunk of both towers: the stack of blocks, the final LayerNorm and the MAP head.
"""

import keras
from keras import ops

LAYER_NORM_EPSILON = 1e-6


def quick_gelu(x):
    """OpenAI CLIP's GELU approximation, `x * sigmoid(1.702 x)`."""
    return x * ops.sigmoid(1.702 * x)


# MLP activations by name: big_vision and SILC use exact GELU; SigLIP checkpoints the
# tanh approximation (HF "gelu_pytorch_tanh", keras-hub "gelu_approximate"); OpenAI
# CLIP checkpoints quick GELU.
ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_approximate": lambda x: ops.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
}


def check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown MLP activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
        )
    return activation


def _dense(units, name, dtype, use_bias=True):
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer="glorot_uniform",
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package="keras_silc")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head dot-product attention with separate query, key and value projections.

    Args:
        num_heads: int. Number of attention heads; must divide the width.
        causal: bool. Whether a query may only attend to keys at or before it.

    Call arguments:
        query: (N, T, width).
        value: (N, S, width) or None for self-attention.
        key_mask: optional (N, S) bool, True where a key may be attended to.
    """

    def __init__(self, num_heads, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.causal = causal

    def build(self, query_shape, value_shape=None):
        width = query_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"The width {width} is not divisible by num_heads={self.num_heads}.")
        value_shape = value_shape or query_shape
        self.query = _dense(width, "query", self.dtype_policy)
        self.key = _dense(width, "key", self.dtype_policy)
        self.value = _dense(width, "value", self.dtype_policy)
        self.output_dense = _dense(width, "output", self.dtype_policy)
        self.query.build(query_shape)
        self.key.build(value_shape)
        self.value.build(value_shape)
        self.output_dense.build(query_shape)

    def _split_heads(self, x):
        n, t, width = ops.shape(x)
        return ops.reshape(x, (n, t, self.num_heads, width // self.num_heads))

    def call(self, query, value=None, key_mask=None):
        value = query if value is None else value
        q = self._split_heads(self.query(query))
        k = self._split_heads(self.key(value))
        v = self._split_heads(self.value(value))
        mask = None
        if key_mask is not None:
            mask = ops.cast(key_mask, "bool")[:, None, None, :]
        out = ops.dot_product_attention(q, k, v, mask=mask, is_causal=self.causal)
        n, t = ops.shape(query)[0], ops.shape(query)[1]
        return self.output_dense(ops.reshape(out, (n, t, -1)))

    def value_path(self, tokens):
        """Each token's output when it is attended to alone: O(V(x))."""
        return self.output_dense(self.value(tokens))

    def compute_output_shape(self, query_shape, value_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "causal": self.causal})
        return config


@keras.saving.register_keras_serializable(package="keras_silc")
class MlpBlock(keras.layers.Layer):
    """Dense(mlp_dim, activation) then Dense(width).

    Args:
        mlp_dim: int. Hidden size.
        activation: str. A key of `ACTIVATIONS`; defaults to exact GELU.
    """

    def __init__(self, mlp_dim, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        self.mlp_dim = mlp_dim
        self.activation = check_activation(activation)

    def build(self, input_shape):
        self.fc1 = _dense(self.mlp_dim, "fc1", self.dtype_policy)
        self.fc2 = _dense(input_shape[-1], "fc2", self.dtype_policy)
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, x):
        return self.fc2(ACTIVATIONS[self.activation](self.fc1(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mlp_dim": self.mlp_dim, "activation": self.activation})
        return config


def layer_norm(name, dtype, epsilon=LAYER_NORM_EPSILON):
    return keras.layers.LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_silc")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer encoder block.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Hidden size of the MLP.
        causal: bool. Causal self-attention (for causal text towers).
        activation: str. MLP activation, a key of `ACTIVATIONS`.
        layer_norm_epsilon: float. Epsilon of both LayerNorms.
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        causal=False,
        activation="gelu",
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.causal = causal
        self.activation = check_activation(activation)
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        dtype, eps = self.dtype_policy, self.layer_norm_epsilon
        self.norm1 = layer_norm("norm1", dtype, eps)
        self.attention = MultiHeadAttention(
            self.num_heads, causal=self.causal, name="attention", dtype=dtype
        )
        self.norm2 = layer_norm("norm2", dtype, eps)
        self.mlp = MlpBlock(self.mlp_dim, self.activation, name="mlp", dtype=dtype)
        for layer in (self.norm1, self.attention, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x, key_mask=None):
        x = x + self.attention(self.norm1(x), key_mask=key_mask)
        return x + self.mlp(self.norm2(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "causal": self.causal,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_silc")
class MAPHead(keras.layers.Layer):
    """Multi-head attention pooling (big_vision's MAPHead).

    A learned probe attends over the tokens; then LayerNorm + MLP as a residual.
    `dense(tokens)` runs every token through the same value path on its own (value
    and output projections, then the residual MLP), which gives per-patch features
    in the pooled embedding's space: the paper's dense features for zero-shot
    segmentation.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Hidden size of the MLP.
        activation: str. MLP activation, a key of `ACTIVATIONS`.
        layer_norm_epsilon: float.
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        activation="gelu",
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.activation = check_activation(activation)
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, tokens_shape):
        width = tokens_shape[-1]
        self.probe = self.add_weight(
            shape=(1, 1, width), initializer="glorot_uniform", name="probe"
        )
        self.attention = MultiHeadAttention(
            self.num_heads, name="attention", dtype=self.dtype_policy
        )
        self.attention.build((None, 1, width), tokens_shape)
        self.norm = layer_norm("norm", self.dtype_policy, self.layer_norm_epsilon)
        self.norm.build((None, 1, width))
        self.mlp = MlpBlock(self.mlp_dim, self.activation, name="mlp", dtype=self.dtype_policy)
        self.mlp.build((None, 1, width))

    def _residual_mlp(self, x):
        return x + self.mlp(self.norm(x))

    def call(self, tokens, key_mask=None):
        n = ops.shape(tokens)[0]
        probe = ops.broadcast_to(ops.cast(self.probe, tokens.dtype), (n, 1, ops.shape(tokens)[-1]))
        pooled = self.attention(probe, tokens, key_mask=key_mask)
        return self._residual_mlp(pooled)[:, 0]

    def dense(self, tokens):
        if not self.built:
            self.build(tokens.shape)
        return self._residual_mlp(self.attention.value_path(tokens))

    def compute_output_shape(self, tokens_shape):
        return (tokens_shape[0], tokens_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


# ------------------------------------------------------------------------ the trunk
def transformer_trunk(
    depth,
    num_heads,
    mlp_dim,
    causal=False,
    activation="gelu",
    layer_norm_epsilon=LAYER_NORM_EPSILON,
    final_norm_epsilon=None,
    map_head=False,
    dtype=None,
):
    """The trunk of both towers: `depth` pre-norm blocks, the final LayerNorm and, for
    attention pooling, a MAP head. A tower keeps the three as its `blocks`, `final_norm`
    and `map_head` attributes (the names of its saved weights and of the checkpoint
    converters in `keras_silc.interop`), builds them with `build_trunk` and runs the blocks
    and the norm with `run_trunk`. Functions rather than a layer: a layer would add a level
    to every weight's path and change the order of the tower's weights.

    Args:
        depth, num_heads, mlp_dim: ints. Blocks, attention heads, MLP hidden size.
        causal: bool. Causal self-attention (CLIP's text tower).
        activation: str. MLP activation, a key of `ACTIVATIONS`.
        layer_norm_epsilon: float. Epsilon of the blocks' and the MAP head's LayerNorms.
        final_norm_epsilon: float or None. Epsilon of the final LayerNorm; None uses
            `layer_norm_epsilon`.
        map_head: bool. Whether to make a MAP head (else `map_head` is None).
        dtype: the tower's dtype policy.

    Returns:
        (blocks, final_norm, map_head), unbuilt.
    """
    blocks = [
        TransformerBlock(
            num_heads,
            mlp_dim,
            causal=causal,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            name=f"block_{i}",
            dtype=dtype,
        )
        for i in range(depth)
    ]
    final_eps = layer_norm_epsilon if final_norm_epsilon is None else final_norm_epsilon
    final_norm = layer_norm("final_norm", dtype, final_eps)
    head = None
    if map_head:
        head = MAPHead(
            num_heads,
            mlp_dim,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            name="map_head",
            dtype=dtype,
        )
    return blocks, final_norm, head


def build_trunk(width, blocks, final_norm, map_head=None):
    """Builds `transformer_trunk`'s layers for tokens `width` wide, in a fixed order (the
    order in which their weights draw their initial values)."""
    tokens = (None, None, width)
    for block in blocks:
        block.build(tokens)
    final_norm.build(tokens)
    if map_head is not None:
        map_head.build(tokens)


def run_trunk(blocks, final_norm, tokens, key_mask=None, remat=False):
    """(N, T, width) tokens through every block, then the final LayerNorm.

    Args:
        key_mask: optional (N, T) bool, True where a token may be attended to.
        remat: bool. Recompute each block's activations in the backward pass instead of
            keeping them (`keras.remat`): less memory for about one more forward.
    """
    for block in blocks:
        if remat:
            tokens = keras.remat(lambda x, block=block: block(x, key_mask=key_mask))(tokens)
        else:
            tokens = block(tokens, key_mask=key_mask)
    return final_norm(tokens)
