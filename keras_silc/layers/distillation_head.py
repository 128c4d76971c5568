"""The self-distillation projection head (DINO's head).

An MLP maps the image embedding to a bottleneck, which is L2-normalised and scored
against K prototypes by a weight-normalised linear layer whose norm is fixed at 1.
Both sides being unit vectors bounds the logits to [-1, 1], which is what keeps the
0.04 teacher temperature stable.
"""

import keras
from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """x / max(||x||, epsilon), computed in float32 and cast back."""
    x32 = ops.cast(x, "float32")
    norm = ops.sqrt(ops.sum(ops.square(x32), axis=axis, keepdims=True))
    return ops.cast(x32 / ops.maximum(norm, epsilon), x.dtype)


@keras.saving.register_keras_serializable(package="keras_silc")
class WeightNormalizedDense(keras.layers.Layer):
    """A linear layer without bias whose kernel columns are scaled to unit norm.

    This is `torch.nn.utils.weight_norm` with the gain frozen at 1, as in DINO.

    Args:
        units: int. Output size (K, the number of prototypes).
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="kernel",
        )

    def call(self, x):
        kernel = l2_normalize(self.kernel, axis=0)
        return ops.matmul(x, ops.cast(kernel, x.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="keras_silc")
class DistillationHead(keras.layers.Layer):
    """DINO projection head: MLP -> bottleneck -> L2 norm -> weight-normed K-way layer.

    Args:
        num_prototypes: int. K, the number of outputs (65536 in the paper).
        hidden_dim: int. Width of the hidden MLP layers. Defaults to 2048.
        bottleneck_dim: int. Size of the L2-normalised bottleneck. Defaults to 256.
        num_layers: int. Number of MLP layers, the last one to the bottleneck.
            Defaults to 3.
    """

    def __init__(self, num_prototypes, hidden_dim=2048, bottleneck_dim=256, num_layers=3, **kwargs):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        self.num_prototypes = num_prototypes
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.num_layers = num_layers

    def build(self, input_shape):
        sizes = [self.hidden_dim] * (self.num_layers - 1) + [self.bottleneck_dim]
        self.mlp = []
        shape = tuple(input_shape)
        for i, units in enumerate(sizes):
            layer = keras.layers.Dense(
                units,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name=f"mlp_{i}",
                dtype=self.dtype_policy,
            )
            layer.build(shape)
            shape = shape[:-1] + (units,)
            self.mlp.append(layer)
        self.prototypes = WeightNormalizedDense(
            self.num_prototypes, name="prototypes", dtype=self.dtype_policy
        )
        self.prototypes.build(shape)

    def bottleneck(self, x):
        """The L2-normalised bottleneck vector (N, bottleneck_dim) that the prototypes score."""
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            if i < len(self.mlp) - 1:
                x = ops.gelu(x, approximate=False)
        return l2_normalize(x)

    def call(self, x):
        return self.prototypes(self.bottleneck(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_prototypes,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_prototypes": self.num_prototypes,
                "hidden_dim": self.hidden_dim,
                "bottleneck_dim": self.bottleneck_dim,
                "num_layers": self.num_layers,
            }
        )
        return config
