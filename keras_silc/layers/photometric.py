"""DINO's photometric augmentation of multi-crop views: one implementation, run by the host
pipeline inside tf.data and by the model on the accelerator.

The tf.data pipeline (`keras_silc.data.augment`) draws each crop's random parameters from its
seed. With `MultiCropConfig(photometric="host")` it applies them here, inside tf.data; with
`photometric="accelerator"` it ships them with the unaugmented crops and `SilcModel` applies
them here at the start of its step. The code is written in Keras's backend ops and runs on
Keras's TensorFlow backend inside tf.data whatever the Keras backend, as Keras's own
preprocessing layers do (`keras.src.utils.backend_utils.DynamicBackend`), and on the model's
backend in its step.

The maths: one affine colour map per crop (brightness, contrast, saturation, hue as a rotation
about the grey axis in YIQ as NVIDIA DALI's colour twist does, and grayscale), clipped once; a
separable Gaussian blur with the shipped kernel (reflect padding); solarize at 0.5.
"""

import numpy as np
from keras.src.utils import backend_utils

from keras_silc.batch_format import COLOR_PARAMETERS
from keras_silc.batch_format import PHOTOMETRIC_KEYS

# ITU-R 601-2 luma (as tf.image and torchvision use) and RGB -> YIQ (NTSC): a hue shift is a
# rotation of YIQ's (I, Q) plane.
LUMA = (0.2989, 0.5870, 0.1140)
YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)

_LUMA = np.array(LUMA, np.float32)
# For row vectors (out = x @ M): a hue rotation R of (I, Q) is YIQ^T @ R^T-form @ inv(YIQ)^T.
_TO_YIQ = np.array(YIQ, np.float64).T.astype(np.float32)
_FROM_YIQ = np.linalg.inv(np.array(YIQ, np.float64)).T.astype(np.float32)


def backend_ops(backend=None):
    """Keras's ops of one backend: `backend` ("tensorflow", "jax", "torch"), or by default
    the TensorFlow backend inside a TF graph such as a tf.data map and Keras's backend
    elsewhere (the rule of Keras's preprocessing layers)."""
    ops = backend_utils.DynamicBackend()
    if backend is not None:
        ops.set_backend(backend)
    elif backend_utils.in_tf_graph():
        ops.set_backend("tensorflow")
    return ops


def _blend_with_grey(factors):
    """(..., 3, 3) matrices f * I + (1 - f) * grey, grey[i, j] = LUMA[i]."""
    factors = factors[..., None, None]
    grey = np.tile(_LUMA[:, None], (1, 3))
    return factors * np.eye(3, dtype=np.float32) + (1 - factors) * grey


def _hue_rotation(ops, deltas):
    """(..., 3, 3) matrices that turn hue by `deltas` (fractions of a turn) about grey."""
    angle = -2.0 * np.pi * deltas
    cos, sin = ops.numpy.cos(angle), ops.numpy.sin(angle)
    one, zero = ops.numpy.ones_like(cos), ops.numpy.zeros_like(cos)
    rotation = ops.numpy.stack([one, zero, zero, zero, cos, sin, zero, -sin, cos], axis=-1)
    rotation = ops.numpy.reshape(rotation, (-1, deltas.shape[1], 3, 3))
    return ops.numpy.matmul(ops.numpy.matmul(_TO_YIQ, rotation), _FROM_YIQ)


def _mean_grey(ops, crops):
    return ops.numpy.einsum("bnc,c->bn", ops.numpy.mean(crops, axis=(2, 3)), _LUMA)


def _parameters(color, names):
    return (color[..., COLOR_PARAMETERS.index(name)] for name in names)


def _color_map(ops, crops, color):
    """The colour jitter and grayscale of (B, N, H, W, 3) crops in [0, 1] as one affine map
    per crop, clipped once, with (B, N, 6) parameters in `COLOR_PARAMETERS` order."""
    brightness, contrast, saturation, hue, grey = _parameters(
        color, ("brightness", "contrast", "saturation", "hue", "grayscale")
    )
    mean_grey = _mean_grey(ops, crops)
    # Brightness, then contrast against the brightened crop's mean grey: out = x @ M + shift.
    matrix = (contrast * brightness)[..., None, None] * np.eye(3, dtype=np.float32)
    shift = ((1 - contrast) * brightness * mean_grey)[..., None] * np.ones(3, np.float32)
    for step in (
        _blend_with_grey(saturation),
        _hue_rotation(ops, hue),
        _blend_with_grey(1 - grey),
    ):
        matrix = ops.numpy.matmul(matrix, step)
        shift = ops.numpy.einsum("bni,bnij->bnj", shift, step)
    mapped = ops.numpy.einsum("bnhwi,bnij->bnhwj", crops, matrix) + shift[:, :, None, None, :]
    return ops.numpy.clip(mapped, 0.0, 1.0)


def _reflect_pad(ops, x, radius, axis):
    """numpy's "reflect" padding (the edge not repeated) along `axis`, from slices (torch's
    reflect padding does not pad every pair of axes)."""

    def take(start, stop):
        return x[(slice(None),) * axis + (slice(start, stop),)]

    length = x.shape[axis]
    before = ops.numpy.flip(take(1, radius + 1), axis=axis)
    after = ops.numpy.flip(take(length - radius - 1, length - 1), axis=axis)
    return ops.numpy.concatenate([before, x, after], axis=axis)


def _gaussian_blur(ops, crops, kernels):
    """Separable blur of (B, N, H, W, C) crops, each with its own 1-D kernel of (B, N, K) (a
    delta kernel leaves a crop unchanged), reflect-padded.

    Every crop's channels become channels of one image, so that one depthwise convolution
    per axis blurs all crops, each with its own kernel.
    """
    _, count, height, width, channels = crops.shape
    size = kernels.shape[-1]
    radius = size // 2
    if radius >= min(height, width):
        raise ValueError(
            f"Blur kernels of {size} taps are too wide for {height}x{width} crops (reflect "
            "padding needs radius < side); lower MultiCropConfig.blur_sigma."
        )
    images = ops.numpy.reshape(ops.numpy.transpose(crops, (2, 3, 0, 1, 4)), (1, height, width, -1))
    images = _reflect_pad(ops, _reflect_pad(ops, images, radius, 1), radius, 2)
    taps = ops.numpy.transpose(
        ops.numpy.repeat(ops.numpy.reshape(kernels, (-1, size)), channels, axis=0)
    )  # (K, B * N * C)
    images = ops.nn.depthwise_conv(images, taps[:, None, :, None], padding="valid")
    images = ops.nn.depthwise_conv(images, taps[None, :, :, None], padding="valid")
    images = ops.numpy.reshape(images, (height, width, -1, count, channels))
    return ops.numpy.transpose(images, (2, 3, 0, 1, 4))


def apply_photometric(crops, color, blur, backend=None):
    """DINO's photometric augmentation of (B, N, H, W, 3) crops in [0, 1].

    Args:
        crops: (B, N, H, W, 3) floats in [0, 1], as the pipeline left them.
        color: (B, N, 6) float32: brightness, contrast, saturation (factors), hue (shift),
            grayscale and solarize (0 or 1), in `COLOR_PARAMETERS` order.
        blur: (B, N, K) float32 normalised 1-D Gaussian kernels, K odd (a delta: no blur).
        backend: the Keras backend whose ops to run; default: TensorFlow's inside a TF graph
            (a tf.data map), else Keras's backend.

    Returns:
        The augmented crops, float32 in [0, 1] (computed in float32 whatever the input dtype).
    """
    ops = backend_ops(backend)
    crops = ops.cast(crops, "float32")
    color = ops.cast(color, "float32")
    blur = ops.cast(blur, "float32")
    crops = _gaussian_blur(ops, _color_map(ops, crops, color), blur)
    # Solarize at 0.5: x - max(2x - 1, 0) is exactly 1 - x at x >= 0.5 (the subtraction
    # being exact there) and x below; a per-crop select costs several times more on a CPU.
    (solarize,) = _parameters(color, ("solarize",))
    solarize = solarize[:, :, None, None, None]
    return crops - solarize * ops.numpy.maximum(2.0 * crops - 1.0, 0.0)


def apply_carried_photometric(batch, keys):
    """The batch with the photometric parameters it carries (`PHOTOMETRIC_KEYS`) applied to
    the crops of `keys` and removed; a batch without them is returned as it is."""
    carried = [key for key, names in PHOTOMETRIC_KEYS.items() if names[0] in batch]
    if not carried:
        return batch
    batch = dict(batch)
    for key in carried:
        color_key, blur_key = PHOTOMETRIC_KEYS[key]
        color, blur = batch.pop(color_key), batch.pop(blur_key)
        if key in keys:
            crops = apply_photometric(batch[key], color, blur)
            batch[key] = backend_ops().cast(crops, batch[key].dtype)
    return batch
