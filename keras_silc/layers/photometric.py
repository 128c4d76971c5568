"""DINO's photometric augmentation of multi-crop views on the accelerator, in `keras.ops`.

With `MultiCropConfig(photometric="accelerator")` the tf.data pipeline draws each crop's
random parameters (seeded, as on the host) and ships them with the unaugmented crops;
`SilcModel` applies them here at the start of its step. The maths is the host's
`color_jitter="fused"` path (`keras_silc.data.augment`): one affine colour map per crop
(brightness, contrast, saturation, a YIQ hue rotation and grayscale), clipped once; a separable
Gaussian blur with the shipped kernel (reflect padding); solarize at 0.5.
"""

import numpy as np
from keras import ops

from keras_silc.batch_format import COLOR_PARAMETERS
from keras_silc.batch_format import PHOTOMETRIC_KEYS

# ITU-R 601-2 luma (as tf.image and torchvision use) and RGB -> YIQ (NTSC), shared with the
# host's ops in `keras_silc.data.augment`: a hue shift is a rotation of YIQ's (I, Q) plane.
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


def _blend_with_grey(factors):
    """(..., 3, 3) matrices f * I + (1 - f) * grey, grey[i, j] = LUMA[i]."""
    factors = factors[..., None, None]
    grey = np.tile(_LUMA[:, None], (1, 3))
    return factors * np.eye(3, dtype=np.float32) + (1 - factors) * grey


def _hue_rotation(deltas):
    """(..., 3, 3) matrices that turn hue by `deltas` (fractions of a turn) about grey."""
    angle = -2.0 * np.pi * deltas
    cos, sin = ops.cos(angle), ops.sin(angle)
    one, zero = ops.ones_like(cos), ops.zeros_like(cos)
    rotation = ops.stack([one, zero, zero, zero, cos, sin, zero, -sin, cos], axis=-1)
    rotation = ops.reshape(rotation, tuple(deltas.shape) + (3, 3))
    return ops.matmul(ops.matmul(_TO_YIQ, rotation), _FROM_YIQ)


def color_map(crops, color):
    """The fused colour jitter and grayscale of (B, N, H, W, 3) crops in [0, 1], with
    (B, N, 6) parameters (brightness, contrast, saturation, hue, grayscale, solarize)."""
    brightness, contrast, saturation, hue, grey = (
        color[..., COLOR_PARAMETERS.index(name)]
        for name in ("brightness", "contrast", "saturation", "hue", "grayscale")
    )
    mean_grey = ops.einsum("bnc,c->bn", ops.mean(crops, axis=(2, 3)), _LUMA)
    # Brightness, then contrast against the brightened crop's mean grey: out = x @ M + shift.
    matrix = (contrast * brightness)[..., None, None] * np.eye(3, dtype=np.float32)
    shift = ((1 - contrast) * brightness * mean_grey)[..., None] * np.ones(3, np.float32)
    for step in (_blend_with_grey(saturation), _hue_rotation(hue), _blend_with_grey(1 - grey)):
        matrix = ops.matmul(matrix, step)
        shift = ops.einsum("bni,bnij->bnj", shift, step)
    mapped = ops.einsum("bnhwi,bnij->bnhwj", crops, matrix) + shift[:, :, None, None, :]
    return ops.clip(mapped, 0.0, 1.0)


def _take(x, axis, start, stop):
    return x[:, :, start:stop] if axis == 2 else x[:, :, :, start:stop]


def _reflect_pad(x, radius, axis):
    """numpy's "reflect" padding (the edge not repeated) along `axis`, from slices (torch's
    reflect padding does not take 5-D inputs padded on two inner axes)."""
    length = x.shape[axis]
    before = ops.flip(_take(x, axis, 1, radius + 1), axis=axis)
    after = ops.flip(_take(x, axis, length - radius - 1, length - 1), axis=axis)
    return ops.concatenate([before, x, after], axis=axis)


def _blur_axis(crops, kernels, axis):
    """Convolves (B, N, H, W, 3) crops along `axis` (2 or 3) with per-crop (B, N, K) kernels,
    reflect-padded: a weighted sum of K shifted copies (K is small, and every backend and
    accelerator does this well)."""
    size = kernels.shape[-1]
    radius = size // 2
    padded = _reflect_pad(crops, radius, axis)
    length = crops.shape[axis]
    weights = kernels[:, :, None, None, None, :]
    total = 0.0
    for k in range(size):
        total = total + _take(padded, axis, k, k + length) * weights[..., k]
    return total


def gaussian_blur(crops, kernels):
    """Separable blur of (B, N, H, W, 3) crops with their (B, N, K) 1-D kernels (a delta
    kernel leaves a crop unchanged)."""
    return _blur_axis(_blur_axis(crops, kernels, 2), kernels, 3)


def apply_photometric(crops, color, blur):
    """DINO's photometric augmentation of (B, N, H, W, 3) crops in [0, 1] on the accelerator.

    Args:
        crops: (B, N, H, W, 3) floats in [0, 1], as the pipeline left them.
        color: (B, N, 6) float32: brightness, contrast, saturation (factors), hue (shift),
            grayscale and solarize (0 or 1), in `COLOR_PARAMETERS` order.
        blur: (B, N, K) float32 normalised 1-D Gaussian kernels, K odd (a delta: no blur).

    Returns:
        The augmented crops, float32 in [0, 1] (computed in float32 whatever the input dtype).
    """
    crops = ops.cast(crops, "float32")
    color = ops.cast(color, "float32")
    blur = ops.cast(blur, "float32")
    crops = gaussian_blur(color_map(crops, color), blur)
    solarize = color[..., COLOR_PARAMETERS.index("solarize")][:, :, None, None, None] > 0.5
    return ops.where(solarize, ops.minimum(crops, 1.0 - crops), crops)


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
            batch[key] = ops.cast(apply_photometric(batch[key], color, blur), batch[key].dtype)
    return batch
