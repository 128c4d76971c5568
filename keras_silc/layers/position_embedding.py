"""Learned 2-D position embedding, resized at run time to any patch grid.

Global crops (256 px) and local crops (96 px) give different patch grids (16x16 and
6x6 at patch 16), so the embedding is resampled to the grid of each input. The
resampling is bicubic with antialias, computed in float32 as in DINOv2, and written
as two small interpolation matrices (one per axis) so that every backend computes
exactly the same numbers: the matrices are the ones `jax.image.resize(...,
"bicubic", antialias=True)` uses, built once per grid in numpy.
"""

import functools

import keras
import numpy as np
from keras import ops


def _keys_cubic_kernel(x):
    """Keys' cubic convolution kernel with a = -0.5 (as jax.image and PIL use)."""
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x >= 2.0, 0.0, np.where(x >= 1.0, far, near))


@functools.lru_cache(maxsize=64)
def bicubic_resize_matrix(in_size, out_size, antialias=True):
    """Returns the (out_size, in_size) matrix that resizes one axis.

    `resized = matrix @ signal` reproduces `jax.image.resize` with half-pixel
    centres, Keys' cubic kernel, the kernel widened by the downscaling factor when
    `antialias` is set, and each row renormalised to sum to one at the borders.
    """
    scale = out_size / in_size
    kernel_scale = max(1.0 / scale, 1.0) if antialias else 1.0
    sample = (np.arange(out_size, dtype=np.float64) + 0.5) / scale - 0.5
    distance = np.abs(sample[:, None] - np.arange(in_size, dtype=np.float64)[None, :])
    weights = _keys_cubic_kernel(distance / kernel_scale)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.where(np.abs(totals) > 1000 * np.finfo(np.float32).eps, weights / totals, 0.0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    weights = np.where(inside[:, None], weights, 0.0)
    return weights.astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_silc")
class PositionEmbedding2D(keras.layers.Layer):
    """Adds a learned position embedding stored for a `grid_size` patch grid.

    Args:
        grid_size: int or (int, int). The patch grid the embedding is stored for
            (image size divided by patch size).
        initializer_stddev: float. Standard deviation of the normal initializer;
            defaults to `1 / sqrt(width)` as in big_vision.

    Call arguments:
        tokens: (N, h * w, width) patch tokens in row-major grid order.
        grid: (h, w), the grid of `tokens`. The stored embedding is resized to it
            when it differs from `grid_size`.
    """

    def __init__(self, grid_size, initializer_stddev=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(grid_size, int):
            grid_size = (grid_size, grid_size)
        self.grid_size = tuple(int(g) for g in grid_size)
        self.initializer_stddev = initializer_stddev

    def build(self, tokens_shape):
        width = tokens_shape[-1]
        stddev = self.initializer_stddev or 1.0 / np.sqrt(width)
        self.embeddings = self.add_weight(
            shape=(self.grid_size[0] * self.grid_size[1], width),
            initializer=keras.initializers.RandomNormal(stddev=stddev),
            name="position_embedding",
        )

    def resized(self, grid):
        """The embedding for a (h, w) grid, as an (h * w, width) tensor."""
        grid = tuple(int(g) for g in grid)
        if grid == self.grid_size:
            return self.embeddings
        gh, gw = self.grid_size
        table = ops.reshape(ops.cast(self.embeddings, "float32"), (gh, gw, -1))
        rows = bicubic_resize_matrix(gh, grid[0])
        cols = bicubic_resize_matrix(gw, grid[1])
        table = ops.einsum("ih,jw,hwd->ijd", rows, cols, table)
        return ops.reshape(table, (grid[0] * grid[1], -1))

    def call(self, tokens, grid):
        embedding = ops.cast(self.resized(grid), tokens.dtype)
        return tokens + embedding[None]

    def compute_output_shape(self, tokens_shape):
        return tokens_shape

    def get_config(self):
        config = super().get_config()
        config.update({"grid_size": self.grid_size, "initializer_stddev": self.initializer_stddev})
        return config
