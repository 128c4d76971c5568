"""SILC's multi-crop views of one image, in tf.data (paper Sec. 4.1, DINO's recipe).

From one image: the full image resized to S (for the contrastive loss), G global crops of
40-100% of the area resized to S, and L local crops of 5-40% of the area resized to s, each a
random resized crop with aspect-ratio jitter, resized with antialias. DINO's photometric
augmentation (flip, colour jitter, grayscale, blur, solarize) applies to the crops.

Every random choice is a stateless `tf.image` / `tf.random` op keyed by a per-example seed, so
the same seed gives the same views whatever the parallelism (Keras's random preprocessing layers
keep their state in a seed generator, which parallel tf.data maps cannot make deterministic).
"""

import dataclasses
import math
import numbers

import tensorflow as tf

from keras_silc.batch_format import COLOR_PARAMETERS
from keras_silc.layers.photometric import apply_photometric

# torchvision's ColorJitter(0.4, 0.4, 0.2, 0.1) as DINO uses it, and its blur sigma range,
# which DINO applies at 224 px; we scale it with the crop size.
_DINO_BLUR_REFERENCE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class MultiCropConfig:
    """Geometry and photometric recipe of the multi-crop views.

    Get it from the model's preprocessor, `model.preprocessor.multi_crop_config(**overrides)`,
    so that the pipeline and the model cannot disagree on sizes and counts.

    Args:
        image_size: S, the side of the full image and the global crops.
        num_global_crops: G.
        local_crop_size: s, the side of the local crops.
        num_local_crops: L.
        global_scale: (min, max) fraction of the image area of a global crop.
        local_scale: (min, max) fraction of the image area of a local crop.
        aspect_ratio: (min, max) width / height of a crop (log-uniform).
        flip: "captioned_swap" (default): one coin per example flips the full image and the
            global crops together and swaps the words "left" and "right" in the caption;
            local crops (never compared with text) flip independently. "uncaptioned": only
            local crops flip. "none": no flips.
        color_jitter_probability, brightness, contrast, saturation, hue: DINO's colour
            jitter (multiplicative brightness/contrast/saturation factors in [1 - x, 1 + x],
            hue shift in [-hue, hue]), applied with grayscale as one affine colour map per
            crop (hue as a rotation about the grey axis in YIQ, as NVIDIA DALI's colour twist
            does), clipped once: torchvision's ops one after the other differ only where an
            intermediate value would have been clipped, and in the hue model. Colour words
            in captions make hue jitter on captioned views lie; set `hue=0` for such data.
        grayscale_probability: probability of converting a crop to grayscale.
        global_blur_probabilities: blur probability of each global crop, cycled (DINO:
            1.0 for the first, 0.1 for the second).
        local_blur_probability: blur probability of a local crop (DINO: 0.5).
        blur_sigma: (min, max) Gaussian sigma at 224 px, scaled to the crop size.
        solarize_probabilities: per global crop, cycled (DINO: 0 for the first, 0.2 for
            the second); local crops are not solarized.
        photometric: where the crops' photometric augmentation runs; the same code
            (`keras_silc.layers.apply_photometric`) with the same random parameters either
            way. "host" (default): in tf.data, the batch holds finished crops.
            "accelerator": tf.data draws the parameters (so the batches stay seeded and
            identical on every backend) but leaves the pixels alone; the batch carries them
            as "global_crop_color" / "global_crop_blur" and "local_crop_color" /
            "local_crop_blur", and `SilcModel` applies them on the GPU/TPU at the start of
            its step. This takes colour jitter, grayscale, blur and solarize (most of the
            pipeline's CPU time) off a small host, e.g. a 2-core Colab VM feeding a GPU.
            Flips stay on the host (captions depend on them).
        local_hue, local_saturation: hue and saturation jitter of the local crops only
            (default: `hue`, `saturation`). Local crops are never compared with a caption, so
            they may change colours that captions name: the student must then match the
            teacher's view of the global crop whatever the colour.
    """

    image_size: int = 256
    num_global_crops: int = 2
    local_crop_size: int = 96
    num_local_crops: int = 8
    global_scale: tuple = (0.4, 1.0)
    local_scale: tuple = (0.05, 0.4)
    aspect_ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    flip: str = "captioned_swap"
    color_jitter_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_probability: float = 0.2
    global_blur_probabilities: tuple = (1.0, 0.1)
    local_blur_probability: float = 0.5
    blur_sigma: tuple = (0.1, 2.0)
    solarize_probabilities: tuple = (0.0, 0.2)
    photometric: str = "host"
    local_hue: float = None
    local_saturation: float = None
    # Removed: refused with what to do instead (see `__post_init__`).
    color_jitter: dataclasses.InitVar[str] = None

    def __post_init__(self, color_jitter):
        if color_jitter is not None:
            raise ValueError(
                f"MultiCropConfig(color_jitter={color_jitter!r}): the option was removed. The "
                "colour jitter is always one affine colour map per crop (what "
                "color_jitter='fused' was), on the host and on the accelerator alike; "
                "torchvision's clipped ops one after the other ('exact') cost 1.3-1.6x its "
                "CPU time per image (benchmarks/README.md). Drop the argument."
            )

        def refuse(name, why):
            raise ValueError(f"MultiCropConfig {name}={getattr(self, name)!r}: {why}")

        def number(value):
            return isinstance(value, numbers.Real) and not isinstance(value, bool)

        for name, minimum in (
            ("image_size", 1),
            ("local_crop_size", 1),
            ("num_global_crops", 0),
            ("num_local_crops", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                refuse(name, "must be an int.")
            if value < minimum:
                refuse(name, f"must be at least {minimum}.")
        for name in ("global_scale", "local_scale", "aspect_ratio", "blur_sigma"):
            pair = getattr(self, name)
            if (
                not isinstance(pair, tuple | list)
                or len(pair) != 2
                or not all(number(v) for v in pair)
            ):
                refuse(name, "must be a (min, max) pair of numbers.")
            if not 0 < pair[0] <= pair[1]:
                refuse(name, "must be (min, max) with 0 < min <= max.")
        for name in ("global_scale", "local_scale"):
            if getattr(self, name)[1] > 1:
                refuse(name, "is a fraction of the image area: at most 1.")
        for name in ("color_jitter_probability", "grayscale_probability", "local_blur_probability"):
            if not number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                refuse(name, "must be a probability in [0, 1].")
        for name in ("global_blur_probabilities", "solarize_probabilities"):
            values = getattr(self, name)
            if not isinstance(values, tuple | list) or not values:
                refuse(name, "must be a non-empty list of probabilities, one per global crop.")
            if not all(number(v) and 0 <= v <= 1 for v in values):
                refuse(name, "must hold probabilities in [0, 1].")
        for name, optional in (
            ("brightness", False),
            ("contrast", False),
            ("saturation", False),
            ("local_saturation", True),
        ):
            value = getattr(self, name)
            if not (optional and value is None) and (not number(value) or not 0 <= value <= 1):
                refuse(name, "must be a jitter strength in [0, 1] (factors in [1 - x, 1 + x]).")
        for name, optional in (("hue", False), ("local_hue", True)):
            value = getattr(self, name)
            if not (optional and value is None) and (not number(value) or not 0 <= value <= 0.5):
                refuse(name, "must be a hue shift in [0, 0.5] (as torchvision's ColorJitter).")
        if self.flip not in ("captioned_swap", "uncaptioned", "none"):
            raise ValueError(
                f"flip must be 'captioned_swap', 'uncaptioned' or 'none', got {self.flip!r}."
            )
        if self.photometric not in ("host", "accelerator"):
            raise ValueError(
                f"photometric must be 'host' or 'accelerator', got {self.photometric!r}."
            )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------ random helpers
def _seeds(seed, count):
    """`count` independent stateless seeds derived from one (2,) seed."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=count))


def _uniform(seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


# -------------------------------------------------------------------- geometry
def sample_crop_boxes(image_shape, count, scale, aspect_ratio, seed):
    """`count` random resized crop boxes, an int32 (count, 4) of (offset_y, offset_x, h, w).

    Area fraction in `scale` and width/height ratio in `aspect_ratio` (log-uniform), as
    torchvision's RandomResizedCrop samples them; after 10 failed tries a box falls back to the
    largest centred crop whose ratio is in range and whose area is at most `scale[1]`. All
    boxes are drawn at once (a few ops for the whole view set instead of a few per crop).
    """
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    area = height * width
    log_ratio = (math.log(aspect_ratio[0]), math.log(aspect_ratio[1]))
    tries = 10
    draws = tf.random.stateless_uniform([count, tries, 4], seed)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    ratio = tf.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[..., 1])
    crop_w = tf.round(tf.sqrt(target_area * ratio))
    crop_h = tf.round(tf.sqrt(target_area / ratio))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1)  # the first try that fits

    def take(values):
        return tf.gather(values, first, axis=1, batch_dims=1)

    h, w = take(crop_h), take(crop_w)
    y = tf.floor(take(draws[..., 2]) * (height - h + 1))
    x = tf.floor(take(draws[..., 3]) * (width - w + 1))
    sampled = tf.stack([y, x, h, w], axis=1)

    in_ratio = tf.clip_by_value(width / height, aspect_ratio[0], aspect_ratio[1])
    fallback_w = tf.minimum(width, tf.round(height * in_ratio))
    fallback_h = tf.minimum(height, tf.round(fallback_w / in_ratio))
    shrink = tf.minimum(1.0, tf.sqrt(scale[1] * area / (fallback_h * fallback_w)))
    fallback_h = tf.maximum(1.0, tf.round(fallback_h * shrink))
    fallback_w = tf.maximum(1.0, tf.round(fallback_w * shrink))
    fallback = tf.stack(
        [
            tf.floor((height - fallback_h) / 2),
            tf.floor((width - fallback_w) / 2),
            fallback_h,
            fallback_w,
        ]
    )
    boxes = tf.where(tf.reduce_any(fits, axis=1)[:, None], sampled, fallback[None])
    return tf.cast(boxes, tf.int32)


def sample_crop_box(image_shape, scale, aspect_ratio, seed):
    """One random resized crop box: int32 scalars (offset_y, offset_x, height, width)."""
    return tf.unstack(sample_crop_boxes(image_shape, 1, scale, aspect_ratio, seed)[0])


def resize(image, size):
    """Antialiased resize to (size, size): area averaging when both sides shrink, else bilinear.

    Area averaging is the box filter that antialiasing approximates and ~3x cheaper on a CPU
    than `antialias=True` bilinear (which was half of the pipeline's time); when a side grows,
    bilinear (antialiased in the shrinking direction) is used. A uint8 image gives float32
    in [0, 1].
    """
    shape = tf.shape(image)
    shrinks = tf.logical_and(shape[0] >= size, shape[1] >= size)
    resized = tf.cond(
        shrinks,
        lambda: tf.image.resize(image, (size, size), method="area"),
        lambda: tf.image.resize(image, (size, size), method="bilinear", antialias=True),
    )
    if image.dtype == tf.uint8:
        # Resizing reads uint8 and writes float32: scale the small output, not the input.
        resized = resized * (1.0 / 255.0)
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


def random_resized_crops(image, count, size, scale, aspect_ratio, seed):
    """`count` random resized crops of `image`, stacked: (count, size, size, channels)."""
    boxes = tf.unstack(sample_crop_boxes(tf.shape(image), count, scale, aspect_ratio, seed))
    crops = []
    for box in boxes:
        y, x, h, w = tf.unstack(box)
        crops.append(resize(image[y : y + h, x : x + w], size))
    return tf.stack(crops)


# ------------------------------------------------------------------ photometric
# tf.data draws every crop's photometric parameters here; the maths that applies them is
# `keras_silc.layers.photometric`, run inside tf.data on Keras's TensorFlow backend (with
# `photometric="host"`) or by the model on the accelerator (`photometric="accelerator"`).


def _per_crop(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def photometric_parameters(config, seed, size, blur_probabilities, solarize_probabilities):
    """The random photometric parameters of N crops of side `size` (N = len(probabilities)).

    Returns a dict of (N,) float32 tensors: "brightness", "contrast", "saturation" (factors, 1
    for no change), "hue" (a shift, 0 for none), "grayscale" and "solarize" (0 or 1), and
    "blur_sigma" (0 for no blur).
    """
    num_crops = len(blur_probabilities)
    draws = tf.unstack(tf.random.stateless_uniform([9, num_crops], seed))

    def factors(draw, amount, apply):
        return tf.where(apply, 1 - amount + 2 * amount * draw, 1.0)

    jitter = draws[0] < config.color_jitter_probability
    low, high = _blur_sigma_range(config, size)
    blur = draws[6] < tf.constant(blur_probabilities, tf.float32)
    return {
        "brightness": factors(draws[1], config.brightness, jitter),
        "contrast": factors(draws[2], config.contrast, jitter),
        "saturation": factors(draws[3], config.saturation, jitter),
        "hue": tf.where(jitter, config.hue * (2 * draws[4] - 1), 0.0),
        "grayscale": tf.cast(draws[5] < config.grayscale_probability, tf.float32),
        "blur_sigma": tf.where(blur, low + (high - low) * draws[7], 0.0),
        "solarize": tf.cast(draws[8] < tf.constant(solarize_probabilities, tf.float32), tf.float32),
    }


def _blur_sigma_range(config, size):
    """`config.blur_sigma` (given at DINO's 224 px) scaled to crops of side `size`."""
    scale = (size or _DINO_BLUR_REFERENCE_SIZE) / _DINO_BLUR_REFERENCE_SIZE
    return config.blur_sigma[0] * scale, config.blur_sigma[1] * scale


def blur_radius(config, size):
    """The Gaussian kernel's half-width for crops of side `size`: 3 sigma at the largest sigma."""
    return max(1, int(math.ceil(3 * _blur_sigma_range(config, size)[1])))


def gaussian_kernels(sigmas, radius):
    """(N, 2 radius + 1) normalised 1-D Gaussian kernels; a delta where sigma is 0."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigmas = tf.reshape(tf.cast(sigmas, tf.float32), [-1, 1])
    safe = tf.where(sigmas > 0, sigmas, 1.0)
    kernels = tf.exp(-0.5 * tf.square(x / safe))
    kernels = kernels / tf.reduce_sum(kernels, axis=1, keepdims=True)
    delta = tf.cast(tf.equal(x, 0.0), tf.float32)[None]
    return tf.where(sigmas > 0, kernels, delta)


def photometric_batch_entries(params, config, size):
    """The accelerator's inputs for N crops: (N, 6) colour parameters (`COLOR_PARAMETERS`)
    and (N, K) blur kernels (see `keras_silc.layers.apply_photometric`)."""
    color = tf.stack([params[name] for name in COLOR_PARAMETERS], axis=-1)
    return color, gaussian_kernels(params["blur_sigma"], blur_radius(config, size))


def photometric(images, config, seed, blur_probabilities, solarize_probabilities):
    """DINO's photometric augmentation of a stack of crops (N, H, W, 3), applied here.

    Colour jitter (brightness, contrast, saturation, hue in this fixed order) with probability
    `config.color_jitter_probability`, grayscale, then Gaussian blur and solarize with the
    per-crop probabilities given (sequences of length N).
    """
    if len(blur_probabilities) == 0:
        return images
    size = images.shape[1]
    params = photometric_parameters(config, seed, size, blur_probabilities, solarize_probabilities)
    color, blur = photometric_batch_entries(params, config, size)
    return apply_photometric(images[None], color[None], blur[None], backend="tensorflow")[0]


def swap_left_right(caption):
    """Swaps the words left and right (any case) in a tf.string tensor."""
    caption = tf.strings.regex_replace(caption, r"\b([Ll])eft\b", "\x00\\1")
    caption = tf.strings.regex_replace(caption, r"\bright\b", "left")
    caption = tf.strings.regex_replace(caption, r"\bRight\b", "Left")
    caption = tf.strings.regex_replace(caption, "\x00l", "right")
    return tf.strings.regex_replace(caption, "\x00L", "Right")


def _flip(image, flip):
    return tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)


# ---------------------------------------------------------------------- views
def multi_crop_views(image, caption, config, seed):
    """The training views of one image.

    Args:
        image: (H, W, 3) float32 in [0, 1], or uint8 (scaled to [0, 1] once resized).
        caption: tf.string scalar (left/right swapped when captioned views are flipped).
        config: `MultiCropConfig`.
        seed: (2,) int seed; the same seed gives the same views.

    Returns:
        A dict with "image" (S, S, 3), "global_crops" (G, S, S, 3) when G > 0,
        "local_crops" (L, s, s, 3) when L > 0, all float32 in [0, 1], and "caption". With
        `config.photometric="accelerator"` the crops are not yet photometrically augmented
        and the dict also holds their parameters: "global_crop_color" (G, 6) and
        "global_crop_blur" (G, K), "local_crop_color" (L, 6) and "local_crop_blur" (L, k).
    """
    seeds = _seeds(seed, 7)
    flip_seed, _, global_seed, local_seed, local_flip_seed = seeds[:5]
    global_box_seed, local_box_seed = seeds[5:]
    flip_captioned = tf.constant(False)
    if config.flip == "captioned_swap":
        flip_captioned = _uniform(flip_seed) < 0.5
        caption = tf.cond(flip_captioned, lambda: swap_left_right(caption), lambda: caption)

    full = _flip(resize(image, config.image_size), flip_captioned)
    views = {"image": full, "caption": caption}

    def cycle(values, count):
        return [values[index % len(values)] for index in range(count)]

    if config.num_global_crops:
        crops = random_resized_crops(
            image,
            config.num_global_crops,
            config.image_size,
            config.global_scale,
            config.aspect_ratio,
            global_box_seed,
        )
        # Captioned views flip with the full image.
        crops = tf.cond(flip_captioned, lambda: tf.reverse(crops, [2]), lambda: crops)
        views.update(
            _crop_photometric(
                "global",
                crops,
                config,
                global_seed,
                cycle(config.global_blur_probabilities, config.num_global_crops),
                cycle(config.solarize_probabilities, config.num_global_crops),
            )
        )

    if config.num_local_crops:
        crops = random_resized_crops(
            image,
            config.num_local_crops,
            config.local_crop_size,
            config.local_scale,
            config.aspect_ratio,
            local_box_seed,
        )
        if config.flip != "none":
            flips = tf.random.stateless_uniform([config.num_local_crops], local_flip_seed) < 0.5
            crops = tf.where(_per_crop(flips), tf.reverse(crops, [2]), crops)
        local_config = config.replace(
            hue=config.hue if config.local_hue is None else config.local_hue,
            saturation=(
                config.saturation if config.local_saturation is None else config.local_saturation
            ),
        )
        views.update(
            _crop_photometric(
                "local",
                crops,
                local_config,
                local_seed,
                [config.local_blur_probability] * config.num_local_crops,
                [0.0] * config.num_local_crops,
            )
        )
    return views


def _crop_photometric(name, crops, config, seed, blur_probabilities, solarize_probabilities):
    """{"<name>_crops"} augmented here, or with `photometric="accelerator"` the raw crops
    and their parameters {"<name>_crop_color", "<name>_crop_blur"} (the same draws)."""
    if config.photometric == "host":
        crops = photometric(crops, config, seed, blur_probabilities, solarize_probabilities)
        return {f"{name}_crops": crops}
    size = crops.shape[1]
    params = photometric_parameters(config, seed, size, blur_probabilities, solarize_probabilities)
    color, blur = photometric_batch_entries(params, config, size)
    return {f"{name}_crops": crops, f"{name}_crop_color": color, f"{name}_crop_blur": blur}
