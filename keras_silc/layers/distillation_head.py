"""The self-distillation projection head (DINO's head).

An MLP maps the image embedding to a bottleneck, which is L2-normalised and scored
against K prototypes by a weight-normalised linear layer whose norm is fixed at 1.
Both sides being unit vectors bounds the logits to [-1, 1], which is what keeps the
0.04 teacher temperature stable.

With `batch_norm=True` each hidden layer is followed by batch normalisation, as in
DINO's `use_bn_in_head`. It takes the part of the embedding that every image of the
batch shares out of the head's hidden layers; without it a small model's head can map
every image to the same bottleneck vector, and the centred teacher is then uniform
(docs/results.md).
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

    def call(self, x, gradient_scale=None):
        """`gradient_scale` (a scalar, or None for 1) scales the kernel's gradient and
        leaves the output as it is: 0 freezes the layer (DINO's `freeze_last_layer`)."""
        kernel = l2_normalize(self.kernel, axis=0)
        if gradient_scale is not None:
            scale = ops.cast(gradient_scale, kernel.dtype)
            kernel = scale * kernel + (1.0 - scale) * ops.stop_gradient(kernel)
        return ops.matmul(x, ops.cast(kernel, x.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="keras_silc")
class HeadBatchNormalization(keras.layers.Layer):
    """Batch normalisation over the last axis that uses the batch's statistics whenever
    `training` is true, also in a frozen layer.

    `keras.layers.BatchNormalization` runs a layer whose `trainable` is False in
    inference mode (the fine-tuning convention). The EMA teacher is frozen for the
    optimizer, yet like DINO's teacher it must normalise with the statistics of its
    batch. Computed in float32, the variance as the mean squared deviation from the
    mean: `ops.moments` on PyTorch takes E[x^2] - E[x]^2, which loses the variance to
    round-off when the activations share an offset large against their spread.
    Moving averages as Keras's (`momentum` 0.9 is PyTorch's 0.1).

    Args:
        momentum: float. Weight of the old moving averages in each update.
        epsilon: float. Added to the variance.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=shape, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=shape, initializer="ones", trainable=False, name="moving_variance"
        )

    def call(self, x, training=None):
        x32 = ops.cast(x, "float32")
        if training:
            axes = list(range(len(x.shape) - 1))
            mean = ops.mean(x32, axis=axes)
            variance = ops.mean(ops.square(x32 - mean), axis=axes)
            m = self.momentum
            self.moving_mean.assign(m * self.moving_mean.value + (1.0 - m) * mean)
            self.moving_variance.assign(m * self.moving_variance.value + (1.0 - m) * variance)
        else:
            mean, variance = self.moving_mean.value, self.moving_variance.value
        y = ops.batch_normalization(
            x32,
            ops.cast(mean, "float32"),
            ops.cast(variance, "float32"),
            axis=-1,
            offset=ops.cast(self.beta, "float32"),
            scale=ops.cast(self.gamma, "float32"),
            epsilon=self.epsilon,
        )
        return ops.cast(y, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "epsilon": self.epsilon})
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
        batch_norm: bool. Batch normalisation after each hidden layer (DINO's
            `use_bn_in_head`; PyTorch's momentum 0.1 and epsilon 1e-5). In training
            it normalises with the statistics of the batch the head is called on (the
            global batch under keras.distribution on JAX), at inference with its moving
            averages. Defaults to False.
    """

    def __init__(
        self,
        num_prototypes,
        hidden_dim=2048,
        bottleneck_dim=256,
        num_layers=3,
        batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        if batch_norm and num_layers < 2:
            raise ValueError("batch_norm=True needs a hidden layer: use num_layers >= 2.")
        self.num_prototypes = num_prototypes
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.num_layers = num_layers
        self.batch_norm = batch_norm

    def build(self, input_shape):
        sizes = [self.hidden_dim] * (self.num_layers - 1) + [self.bottleneck_dim]
        self.mlp, self.norms = [], []
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
            if self.batch_norm and i < len(sizes) - 1:
                norm = HeadBatchNormalization(name=f"mlp_{i}_norm", dtype=self.dtype_policy)
                norm.build(shape)
                self.norms.append(norm)
        self.prototypes = WeightNormalizedDense(
            self.num_prototypes, name="prototypes", dtype=self.dtype_policy
        )
        self.prototypes.build(shape)

    def bottleneck(self, x, training=None):
        """The L2-normalised bottleneck vector (N, bottleneck_dim) that the prototypes score."""
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            if i < len(self.mlp) - 1:
                if self.norms:
                    x = self.norms[i](x, training=training)
                x = ops.gelu(x, approximate=False)
        return l2_normalize(x)

    def call(self, x, training=None, prototype_gradient=None):
        """Logits (N, K). `prototype_gradient`: see `WeightNormalizedDense.call`."""
        return self.prototypes(
            self.bottleneck(x, training=training), gradient_scale=prototype_gradient
        )

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
                "batch_norm": self.batch_norm,
            }
        )
        return config
