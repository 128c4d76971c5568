"""The image tower: a ViT with a MAP head (big_vision's `vit` with `pool_type="map"`)."""

import keras
from keras import ops

from keras_silc.layers.position_embedding import PositionEmbedding2D
from keras_silc.layers.transformer import MAPHead
from keras_silc.layers.transformer import TransformerBlock
from keras_silc.layers.transformer import layer_norm


@keras.saving.register_keras_serializable(package="keras_silc")
class VisionEncoder(keras.layers.Layer):
    """Vision transformer with a MAP head, mapping images to the shared space.

    Images are float (N, H, W, 3) in [0, 1]; H and W may be any multiple of the
    patch size (the position embedding is resized to the patch grid).

    Args:
        image_size: int. The size the position embedding is stored for.
        patch_size: int. Side of a square patch.
        width: int. Token width.
        depth: int. Number of transformer blocks.
        num_heads: int. Attention heads.
        mlp_dim: int. MLP hidden size. Defaults to `4 * width`.
        output_dim: int or None. Size J of the shared embedding space; None uses the
            MAP head's output directly (J = width, as SigLIP's image tower does).
    """

    def __init__(
        self,
        image_size=256,
        patch_size=16,
        width=768,
        depth=12,
        num_heads=12,
        mlp_dim=None,
        output_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} must be a multiple of patch_size={patch_size}."
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim or 4 * width
        self.output_dim = output_dim
        self.embedding_dim = output_dim or width

        dtype = self.dtype_policy
        self.patch_embedding = keras.layers.Dense(width, name="patch_embedding", dtype=dtype)
        self.position_embedding = PositionEmbedding2D(
            image_size // patch_size, name="position_embedding", dtype=dtype
        )
        self.blocks = [
            TransformerBlock(num_heads, self.mlp_dim, name=f"block_{i}", dtype=dtype)
            for i in range(depth)
        ]
        self.final_norm = layer_norm("final_norm", dtype)
        self.map_head = MAPHead(num_heads, self.mlp_dim, name="map_head", dtype=dtype)
        self.projection = (
            keras.layers.Dense(output_dim, name="projection", dtype=dtype) if output_dim else None
        )

    def build(self, images_shape=None):
        tokens = (None, None, self.width)
        self.patch_embedding.build((None, None, self.patch_size * self.patch_size * 3))
        self.position_embedding.build(tokens)
        for block in self.blocks:
            block.build(tokens)
        self.final_norm.build(tokens)
        self.map_head.build(tokens)
        if self.projection is not None:
            self.projection.build((None, self.width))
        self.built = True

    def patch_grid(self, images_shape):
        """The (h, w) patch grid of images of this shape; raises if it has none."""
        h, w = images_shape[1], images_shape[2]
        p = self.patch_size
        if h is None or w is None or h % p or w % p or images_shape[-1] != 3:
            raise ValueError(
                f"Images must be (N, H, W, 3) with H and W multiples of the patch "
                f"size {p} and known when the step is traced; got {tuple(images_shape)}."
            )
        return h // p, w // p

    def tokens(self, images):
        """The encoder output after the final LayerNorm: (N, h * w, width)."""
        h, w = self.patch_grid(images.shape)
        p = self.patch_size
        x = ops.cast(images, self.compute_dtype) * 2.0 - 1.0
        x = ops.reshape(x, (-1, h, p, w, p, 3))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, h * w, p * p * 3))
        x = self.position_embedding(self.patch_embedding(x), grid=(h, w))
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def _project(self, x):
        return x if self.projection is None else self.projection(x)

    def call(self, images):
        """Pooled embeddings (N, J), not normalised."""
        return self._project(self.map_head(self.tokens(images)))

    def dense_features(self, images, source="map_values"):
        """Per-patch features (N, h, w, J) in the shared space, not normalised.

        Args:
            images: (N, H, W, 3) floats in [0, 1].
            source: "map_values" (the paper's choice: each patch token through the
                MAP head's value path and the projection) or "tokens" (the last
                block's tokens after the final norm, projected; only meaningful
                when width == J or for probing).
        """
        h, w = self.patch_grid(images.shape)
        tokens = self.tokens(images)
        if source == "map_values":
            dense = self._project(self.map_head.dense(tokens))
        elif source == "tokens":
            dense = self._project(tokens)
        else:
            raise ValueError(f"source must be 'map_values' or 'tokens', got {source!r}.")
        return ops.reshape(dense, (-1, h, w, self.embedding_dim))

    def compute_output_shape(self, images_shape):
        return (images_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "width": self.width,
                "depth": self.depth,
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "output_dim": self.output_dim,
            }
        )
        return config
