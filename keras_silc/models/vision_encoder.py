"""The image tower: a ViT with a MAP head (big_vision's `vit` with `pool_type="map"`).

The defaults are SILC's tower. The other switches (pixel normalisation, a class
token, a LayerNorm before the blocks, class-token pooling, the MLP activation and
LayerNorm epsilon, bias-free projections) exist so that pretrained SigLIP and CLIP
image towers map onto this layer weight for weight (`keras_silc.interop`).
"""

import keras
from keras import ops

from keras_silc.checks import check_images
from keras_silc.checks import check_rank
from keras_silc.layers.position_embedding import PositionEmbedding2D
from keras_silc.layers.transformer import LAYER_NORM_EPSILON
from keras_silc.layers.transformer import build_trunk
from keras_silc.layers.transformer import layer_norm
from keras_silc.layers.transformer import run_trunk
from keras_silc.layers.transformer import transformer_trunk


def float_pixels(images, dtype, what="images", check_values=True):
    """(N, H, W, 3) pixels as `dtype` floats in [0, 1] for the image tower: uint8 is scaled
    by 1/255; other ranks are refused, and with `check_values` float values outside [0, 1]
    (0..255 floats) too. Host arrays are checked; symbolic ones (inside a compiled step)
    pass."""
    check_rank(
        images,
        4,
        what,
        "a batch of images (N, H, W, 3)",
        " For one image, add a batch axis: images[None].",
    )
    if check_values:
        check_images(images, what)
    images = ops.convert_to_tensor(images)
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, dtype) / 255.0
    return ops.cast(images, dtype)


def on_batch(function, inputs):
    """`function(inputs)`, also for an empty batch: Keras's attention divides by the
    batch size under JAX and PyTorch, so a (0, ...) batch runs as one zero item, cut to 0."""
    if inputs.shape[0] != 0:  # None (symbolic) or a real batch
        return function(inputs)
    outputs = function(ops.zeros((1,) + tuple(inputs.shape[1:]), inputs.dtype))
    return keras.tree.map_structure(lambda output: output[:0], outputs)


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
        pooling: "map" (attention pooling, SigLIP and SILC), "cls" (the class token,
            CLIP; needs `class_token=True`) or "gap" (mean of the patch tokens).
        class_token: bool. Prepend a learned class token (CLIP).
        pre_norm: bool. LayerNorm on the embedded tokens before the blocks (CLIP).
        patch_bias: bool. Whether the patch embedding has a bias (CLIP's has none).
        projection_bias: bool. Whether the projection to J has a bias.
        activation: str. MLP activation: "gelu" (exact), "gelu_approximate" (tanh;
            SigLIP checkpoints) or "quick_gelu" (OpenAI CLIP checkpoints).
        layer_norm_epsilon: float. Epsilon of every LayerNorm.
        pixel_mean, pixel_std: 3 floats each. Images in [0, 1] are normalised as
            `(x - mean) / std` before the patch embedding; the default 0.5 maps them
            to [-1, 1] as big_vision and SigLIP do. CLIP uses the ImageNet-like
            statistics of its training set.
        remat: bool. Recompute each block's activations in the backward pass instead
            of keeping them (`keras.remat`): less memory for about one more forward.
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
        pooling="map",
        class_token=False,
        pre_norm=False,
        patch_bias=True,
        projection_bias=True,
        activation="gelu",
        layer_norm_epsilon=LAYER_NORM_EPSILON,
        pixel_mean=(0.5, 0.5, 0.5),
        pixel_std=(0.5, 0.5, 0.5),
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} must be a multiple of patch_size={patch_size}."
            )
        if pooling not in ("map", "cls", "gap"):
            raise ValueError(f"pooling must be 'map', 'cls' or 'gap', got {pooling!r}.")
        if pooling == "cls" and not class_token:
            raise ValueError("pooling='cls' needs class_token=True.")
        if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
            raise ValueError(
                f"pixel_mean and pixel_std must be 3 floats each (std > 0); got "
                f"{pixel_mean} and {pixel_std}."
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim or 4 * width
        self.output_dim = output_dim
        self.embedding_dim = output_dim or width
        self.pooling = pooling
        self.class_token = class_token
        self.pre_norm = pre_norm
        self.patch_bias = patch_bias
        self.projection_bias = projection_bias
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.pixel_mean = tuple(float(m) for m in pixel_mean)
        self.pixel_std = tuple(float(s) for s in pixel_std)
        self.remat = remat

        dtype, eps = self.dtype_policy, layer_norm_epsilon
        self.patch_embedding = keras.layers.Dense(
            width, use_bias=patch_bias, name="patch_embedding", dtype=dtype
        )
        self.position_embedding = PositionEmbedding2D(
            image_size // patch_size, name="position_embedding", dtype=dtype
        )
        self.pre_norm_layer = layer_norm("pre_norm", dtype, eps) if pre_norm else None
        self.blocks, self.final_norm, self.map_head = transformer_trunk(
            depth,
            num_heads,
            self.mlp_dim,
            activation=activation,
            layer_norm_epsilon=eps,
            map_head=pooling == "map",
            dtype=dtype,
        )
        self.projection = (
            keras.layers.Dense(output_dim, use_bias=projection_bias, name="projection", dtype=dtype)
            if output_dim
            else None
        )

    def build(self, images_shape=None):
        tokens = (None, None, self.width)
        self.patch_embedding.build((None, None, self.patch_size * self.patch_size * 3))
        self.position_embedding.build(tokens)
        if self.class_token:
            stddev = 1.0 / self.width**0.5
            self.class_embedding = self.add_weight(
                shape=(self.width,),
                initializer=keras.initializers.RandomNormal(stddev=stddev),
                name="class_embedding",
            )
            # The class token's own position embedding; it is not resized with the grid.
            self.class_position_embedding = self.add_weight(
                shape=(self.width,),
                initializer=keras.initializers.RandomNormal(stddev=stddev),
                name="class_position_embedding",
            )
        if self.pre_norm_layer is not None:
            self.pre_norm_layer.build(tokens)
        build_trunk(self.width, self.blocks, self.final_norm, self.map_head)
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

    def normalize_pixels(self, images):
        """Images in [0, 1] to the tower's input range, `(x - mean) / std`."""
        x = ops.cast(images, self.compute_dtype)
        if self.pixel_mean == (0.5,) * 3 and self.pixel_std == (0.5,) * 3:
            return x * 2.0 - 1.0
        mean = ops.convert_to_tensor(self.pixel_mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.pixel_std, dtype=self.compute_dtype)
        return (x - mean) / std

    def tokens(self, images):
        """The encoder output after the final LayerNorm: (N, [1 +] h * w, width).

        With `class_token` the class token comes first.
        """
        h, w = self.patch_grid(images.shape)
        p = self.patch_size
        x = self.normalize_pixels(images)
        x = ops.reshape(x, (-1, h, p, w, p, 3))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, h * w, p * p * 3))
        x = self.position_embedding(self.patch_embedding(x), grid=(h, w))
        if self.class_token:
            cls = ops.cast(self.class_embedding + self.class_position_embedding, x.dtype)
            cls = ops.broadcast_to(cls[None, None, :], (ops.shape(x)[0], 1, self.width))
            x = ops.concatenate([cls, x], axis=1)
        if self.pre_norm_layer is not None:
            x = self.pre_norm_layer(x)
        return run_trunk(self.blocks, self.final_norm, x, remat=self.remat)

    def _project(self, x):
        return x if self.projection is None else self.projection(x)

    def _patch_tokens(self, tokens):
        return tokens[:, 1:] if self.class_token else tokens

    def pool(self, tokens):
        """The pooled (N, width) vector of `tokens()`' output, before the projection."""
        if self.pooling == "map":
            return self.map_head(tokens)
        if self.pooling == "cls":
            return tokens[:, 0]
        return ops.mean(self._patch_tokens(tokens), axis=1)

    def call(self, images):
        """Pooled embeddings (N, J), not normalised."""
        return self._project(self.pool(self.tokens(images)))

    def pooled_and_dense(self, images, source=None):
        """`call` and `dense_features` from one pass through the blocks."""
        tokens = self.tokens(images)
        pooled = self._project(self.pool(tokens))
        return pooled, self.dense_from_tokens(tokens, self.patch_grid(images.shape), source)

    def dense_features(self, images, source=None):
        """Per-patch features (N, h, w, J) in the shared space, not normalised.

        Args:
            images: (N, H, W, 3) floats in [0, 1].
            source: "map_values" (the paper's choice: each patch token through the
                MAP head's value path and the projection), "tokens" (the last
                block's patch tokens after the final norm, projected; what a tower
                without a MAP head offers) or None: "map_values" with a MAP head,
                else "tokens".
        """
        grid = self.patch_grid(images.shape)
        return self.dense_from_tokens(self.tokens(images), grid, source)

    def dense_from_tokens(self, tokens, grid, source=None):
        """`dense_features` from the output of `tokens()` on a (h, w) patch grid."""
        if source is None:
            source = "map_values" if self.map_head is not None else "tokens"
        if source not in ("map_values", "tokens"):
            raise ValueError(f"source must be 'map_values' or 'tokens', got {source!r}.")
        if source == "map_values" and self.map_head is None:
            raise ValueError(
                f"source='map_values' needs a MAP head, but this tower pools with "
                f"{self.pooling!r}; use source='tokens'."
            )
        tokens = self._patch_tokens(tokens)
        if source == "map_values":
            dense = self._project(self.map_head.dense(tokens))
        else:
            dense = self._project(tokens)
        return ops.reshape(dense, (-1, grid[0], grid[1], self.embedding_dim))

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
                "pooling": self.pooling,
                "class_token": self.class_token,
                "pre_norm": self.pre_norm,
                "patch_bias": self.patch_bias,
                "projection_bias": self.projection_bias,
                "activation": self.activation,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "pixel_mean": self.pixel_mean,
                "pixel_std": self.pixel_std,
                "remat": self.remat,
            }
        )
        return config
