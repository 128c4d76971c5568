"""The text tower: a transformer over token ids with a pooled output."""

import keras
import numpy as np
from keras import ops

from keras_silc.layers.transformer import LAYER_NORM_EPSILON
from keras_silc.layers.transformer import build_trunk
from keras_silc.layers.transformer import run_trunk
from keras_silc.layers.transformer import transformer_trunk

POOLINGS = ("last", "eos", "argmax", "first", "mean", "map")


@keras.saving.register_keras_serializable(package="keras_silc")
class TextEncoder(keras.layers.Layer):
    """Text transformer mapping (N, T) token ids to (N, J) embeddings.

    Padding (`pad_token_id`) is masked out of the keys everywhere, unless
    `pad_token_id` is None (SigLIP checkpoints attend to their padding). Pooling options:
    - "last": the final position, as big_vision's SigLIP text tower does (pads
      come last and attend only to real tokens, so it sees the whole text);
    - "eos": the first `eos_token_id` in each row, or the last non-pad token when
      `eos_token_id` is None (CLIP's pooling);
    - "argmax": the position of the largest token id (OpenAI CLIP's end token has
      the largest id; the pooling of checkpoints converted from it);
    - "first", "mean" (over non-pad tokens) and "map" (attention pooling).

    Args:
        vocabulary_size: int.
        max_length: int. Context length T; shorter inputs are allowed.
        width, depth, num_heads: ints. Transformer geometry.
        mlp_dim: int. MLP hidden size. Defaults to `4 * width`.
        output_dim: int or None. Size J of the shared space; None keeps `width`.
        causal: bool. Causal self-attention (CLIP) or bidirectional (SigLIP).
        pooling: str. One of "last", "eos", "first", "mean", "map".
        pad_token_id: int or None. Token id of padding, masked out of attention.
            Defaults to 0; None attends to every position.
        eos_token_id: int or None. Token id that ends a text, for "eos" pooling.
        activation: str. MLP activation ("gelu", "gelu_approximate", "quick_gelu").
        layer_norm_epsilon: float. Epsilon of the blocks' LayerNorms.
        final_norm_epsilon: float or None. Epsilon of the final LayerNorm; None uses
            `layer_norm_epsilon`.
        projection_bias: bool. Whether the projection to J has a bias.
        remat: bool. Recompute each block's activations in the backward pass
            (`keras.remat`).
    """

    def __init__(
        self,
        vocabulary_size=32000,
        max_length=64,
        width=768,
        depth=12,
        num_heads=12,
        mlp_dim=None,
        output_dim=None,
        causal=False,
        pooling="last",
        pad_token_id=0,
        eos_token_id=None,
        activation="gelu",
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        final_norm_epsilon=None,
        projection_bias=True,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.vocabulary_size = vocabulary_size
        self.max_length = max_length
        self.width = width
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim or 4 * width
        self.output_dim = output_dim
        self.embedding_dim = output_dim or width
        self.causal = causal
        self.pooling = pooling
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.final_norm_epsilon = final_norm_epsilon
        self.projection_bias = projection_bias
        self.remat = remat

        dtype = self.dtype_policy
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            width,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(width)),
            name="token_embedding",
            dtype=dtype,
        )
        self.blocks, self.final_norm, self.map_head = transformer_trunk(
            depth,
            num_heads,
            self.mlp_dim,
            causal=causal,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            final_norm_epsilon=final_norm_epsilon,
            map_head=pooling == "map",
            dtype=dtype,
        )
        self.projection = (
            keras.layers.Dense(output_dim, use_bias=projection_bias, name="projection", dtype=dtype)
            if output_dim
            else None
        )

    def build(self, token_ids_shape=None):
        self.token_embedding.build((None, None))
        self.position_embedding = self.add_weight(
            shape=(self.max_length, self.width),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(self.width)),
            name="position_embedding",
        )
        build_trunk(self.width, self.blocks, self.final_norm, self.map_head)
        if self.projection is not None:
            self.projection.build((None, self.width))
        self.built = True

    def call(self, token_ids):
        length = token_ids.shape[1]
        if length is None or length > self.max_length:
            raise ValueError(
                f"Token ids must be (N, T) with T <= max_length={self.max_length} known "
                f"when the step is traced; got {tuple(token_ids.shape)}."
            )
        token_ids = ops.cast(token_ids, "int32")
        if self.pad_token_id is None:
            valid = ops.ones_like(token_ids, dtype="bool")
        else:
            valid = ops.not_equal(token_ids, self.pad_token_id)
        # The first position stays visible so an all-padding row cannot empty a softmax.
        first = ops.arange(length) == 0
        key_mask = ops.logical_or(valid, first[None, :])

        x = self.token_embedding(token_ids)
        x = x + ops.cast(self.position_embedding[:length], x.dtype)[None]
        x = run_trunk(self.blocks, self.final_norm, x, key_mask=key_mask, remat=self.remat)
        pooled = self._pool(x, token_ids, valid, key_mask)
        return pooled if self.projection is None else self.projection(pooled)

    def _pool(self, x, token_ids, valid, key_mask):
        if self.pooling == "last":
            return x[:, -1]
        if self.pooling == "first":
            return x[:, 0]
        if self.pooling == "map":
            return self.map_head(x, key_mask=key_mask)
        if self.pooling == "argmax":
            index = ops.cast(ops.argmax(token_ids, axis=1), "int32")
            return ops.einsum("nt,ntd->nd", ops.one_hot(index, ops.shape(x)[1], dtype=x.dtype), x)
        if self.pooling == "mean":
            weights = ops.cast(key_mask, x.dtype)[..., None]
            return ops.sum(x * weights, axis=1) / ops.sum(weights, axis=1)
        # "eos": first EOS token, else the last non-pad token.
        length = ops.shape(token_ids)[1]
        positions = ops.arange(length, dtype="int32")[None, :]
        last_valid = ops.max(ops.where(valid, positions, 0), axis=1)
        if self.eos_token_id is None:
            index = last_valid
        else:
            is_eos = ops.equal(token_ids, self.eos_token_id)
            first_eos = ops.argmax(ops.cast(is_eos, "int32"), axis=1)
            index = ops.where(ops.any(is_eos, axis=1), ops.cast(first_eos, "int32"), last_valid)
        one_hot = ops.one_hot(index, length, dtype=x.dtype)
        return ops.einsum("nt,ntd->nd", one_hot, x)

    def compute_output_shape(self, token_ids_shape):
        return (token_ids_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_length": self.max_length,
                "width": self.width,
                "depth": self.depth,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "output_dim": self.output_dim,
                "causal": self.causal,
                "pooling": self.pooling,
                "pad_token_id": self.pad_token_id,
                "eos_token_id": self.eos_token_id,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "final_norm_epsilon": self.final_norm_epsilon,
                "projection_bias": self.projection_bias,
                "remat": self.remat,
            }
        )
        return config
