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

import tensorflow as tf

# torchvision's ColorJitter(0.4, 0.4, 0.2, 0.1) as DINO uses it, and its blur sigma range,
# which DINO applies at 224 px; we scale it with the crop size.
_DINO_BLUR_REFERENCE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class MultiCropConfig:
    """Geometry and photometric recipe of the multi-crop views.

    Build it from a model with `MultiCropConfig.from_model(model, **overrides)` so that the
    pipeline and the model cannot disagree on sizes and counts.

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
            hue shift in [-hue, hue]). Colour words in captions make hue jitter on captioned
            views lie; set `hue=0` for such data.
        grayscale_probability: probability of converting a crop to grayscale.
        global_blur_probabilities: blur probability of each global crop, cycled (DINO:
            1.0 for the first, 0.1 for the second).
        local_blur_probability: blur probability of a local crop (DINO: 0.5).
        blur_sigma: (min, max) Gaussian sigma at 224 px, scaled to the crop size.
        solarize_probabilities: per global crop, cycled (DINO: 0 for the first, 0.2 for
            the second); local crops are not solarized.
        augment_full_image: also apply photometric jitter to the full image (off: the
            contrastive view stays clean, as in CLIP/SigLIP training).
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
    augment_full_image: bool = False

    def __post_init__(self):
        for name in ("global_scale", "local_scale", "aspect_ratio", "blur_sigma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"{name} must be (min, max) with 0 < min <= max, got {(low, high)}."
                )
        for name in ("global_scale", "local_scale"):
            if getattr(self, name)[1] > 1:
                raise ValueError(f"{name} is a fraction of the image area: at most 1.")
        if self.flip not in ("captioned_swap", "uncaptioned", "none"):
            raise ValueError(
                f"flip must be 'captioned_swap', 'uncaptioned' or 'none', got {self.flip!r}."
            )
        if self.image_size <= 0 or self.local_crop_size <= 0:
            raise ValueError("image_size and local_crop_size must be positive.")
        if self.num_global_crops < 0 or self.num_local_crops < 0:
            raise ValueError("Crop counts cannot be negative.")

    @classmethod
    def from_model(cls, model, **overrides):
        """The views `model` trains on: its S, G, s and L; other fields as overridden.

        Views that no loss of the model uses are not made: no global crops without
        multi-view contrastive or self-distillation, no local crops without
        self-distillation.
        """
        uses_global = model.multi_view_contrastive or model.self_distillation
        geometry = {
            "image_size": model.vision_config.get("image_size", 256),
            "num_global_crops": model.num_global_crops if uses_global else 0,
            "local_crop_size": model.local_crop_size,
            "num_local_crops": model.num_local_crops if model.self_distillation else 0,
        }
        geometry.update(overrides)
        return cls(**geometry)

    @classmethod
    def from_preset(cls, name, **overrides):
        """The views of a model preset (all of them: G global and L local crops)."""
        from keras_silc.models.presets import preset_config

        config = preset_config(name)
        geometry = {
            "image_size": config["vision"]["image_size"],
            "num_global_crops": config["num_global_crops"],
            "local_crop_size": config["local_crop_size"],
            "num_local_crops": config["num_local_crops"],
        }
        geometry.update(overrides)
        return cls(**geometry)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------ random helpers
def _seeds(seed, count):
    """`count` independent stateless seeds derived from one (2,) seed."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=count))


def _uniform(seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


def _maybe(probability, seed, fn, image):
    if probability <= 0:
        return image
    if probability >= 1:
        return fn(image)
    return tf.cond(_uniform(seed) < probability, lambda: fn(image), lambda: image)


# -------------------------------------------------------------------- geometry
def sample_crop_box(image_shape, scale, aspect_ratio, seed):
    """A random resized crop box `(offset_y, offset_x, height, width)` (int32 scalars).

    Area fraction in `scale` and width/height ratio in `aspect_ratio` (log-uniform), as
    torchvision's RandomResizedCrop samples them; after 10 failed tries it falls back to the
    largest centred crop whose ratio is in range and whose area is at most `scale[1]`.
    """
    height = tf.cast(image_shape[0], tf.float32)
    width = tf.cast(image_shape[1], tf.float32)
    area = height * width
    log_ratio = (math.log(aspect_ratio[0]), math.log(aspect_ratio[1]))
    tries = 10
    draws = tf.random.stateless_uniform([tries, 4], seed)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[:, 0])
    ratio = tf.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[:, 1])
    crop_w = tf.round(tf.sqrt(target_area * ratio))
    crop_h = tf.round(tf.sqrt(target_area / ratio))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))

    def sampled():
        h, w = crop_h[first], crop_w[first]
        y = tf.floor(draws[first, 2] * (height - h + 1))
        x = tf.floor(draws[first, 3] * (width - w + 1))
        return tf.stack([y, x, h, w])

    def fallback():
        in_ratio = tf.clip_by_value(width / height, aspect_ratio[0], aspect_ratio[1])
        w = tf.minimum(width, tf.round(height * in_ratio))
        h = tf.minimum(height, tf.round(w / in_ratio))
        shrink = tf.minimum(1.0, tf.sqrt(scale[1] * area / (h * w)))
        h, w = tf.maximum(1.0, tf.round(h * shrink)), tf.maximum(1.0, tf.round(w * shrink))
        return tf.stack([tf.floor((height - h) / 2), tf.floor((width - w) / 2), h, w])

    box = tf.cond(tf.reduce_any(fits), sampled, fallback)
    return tf.unstack(tf.cast(box, tf.int32))


def resize(image, size):
    """Bilinear resize with antialias (a box filter's worth of smoothing when shrinking)."""
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def random_resized_crop(image, size, scale, aspect_ratio, seed):
    y, x, h, w = sample_crop_box(tf.shape(image), scale, aspect_ratio, seed)
    return resize(image[y : y + h, x : x + w], size)


# ------------------------------------------------------------------ photometric
def color_jitter(image, config, seed):
    """DINO's ColorJitter, in a fixed order (brightness, contrast, saturation, hue)."""
    seeds = _seeds(seed, 4)
    if config.brightness:
        factor = _uniform(seeds[0], 1 - config.brightness, 1 + config.brightness)
        image = image * factor
    if config.contrast:
        factor = _uniform(seeds[1], 1 - config.contrast, 1 + config.contrast)
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
        image = (image - mean) * factor + mean
    image = tf.clip_by_value(image, 0.0, 1.0)
    if config.saturation:
        factor = _uniform(seeds[2], 1 - config.saturation, 1 + config.saturation)
        image = tf.image.adjust_saturation(image, factor)
    if config.hue:
        image = tf.image.adjust_hue(image, _uniform(seeds[3], -config.hue, config.hue))
    return tf.clip_by_value(image, 0.0, 1.0)


def grayscale(image):
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def gaussian_blur(image, sigma, max_sigma):
    """Separable Gaussian blur of an (H, W, 3) image; `sigma` may be a tensor."""
    radius = max(1, int(math.ceil(3 * max_sigma)))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = 3
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    # Reflect padding keeps the borders from darkening.
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, horizontal, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, vertical, [1, 1, 1, 1], "VALID")
    return blurred[0]


def solarize(image, threshold=0.5):
    return tf.where(image >= threshold, 1.0 - image, image)


def photometric(image, config, seed, blur_probability, solarize_probability):
    """Colour jitter, grayscale, blur and solarize, each with its probability."""
    seeds = _seeds(seed, 6)
    image = _maybe(
        config.color_jitter_probability,
        seeds[0],
        lambda x: color_jitter(x, config, seeds[1]),
        image,
    )
    image = _maybe(config.grayscale_probability, seeds[2], grayscale, image)
    size = image.shape[0] or _DINO_BLUR_REFERENCE_SIZE
    scale = size / _DINO_BLUR_REFERENCE_SIZE
    low, high = config.blur_sigma[0] * scale, config.blur_sigma[1] * scale
    image = _maybe(
        blur_probability,
        seeds[3],
        lambda x: gaussian_blur(x, _uniform(seeds[4], low, high), high),
        image,
    )
    return _maybe(solarize_probability, seeds[5], solarize, image)


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
        image: (H, W, 3) float32 in [0, 1].
        caption: tf.string scalar (left/right swapped when captioned views are flipped).
        config: `MultiCropConfig`.
        seed: (2,) int seed; the same seed gives the same views.

    Returns:
        A dict with "image" (S, S, 3), "global_crops" (G, S, S, 3) when G > 0,
        "local_crops" (L, s, s, 3) when L > 0, all float32 in [0, 1], and "caption".
    """
    num_views = config.num_global_crops + config.num_local_crops
    seeds = _seeds(seed, 2 + 3 * max(num_views, 1))
    flip_captioned = tf.constant(False)
    if config.flip == "captioned_swap":
        flip_captioned = _uniform(seeds[0]) < 0.5
        caption = tf.cond(flip_captioned, lambda: swap_left_right(caption), lambda: caption)

    full = _flip(resize(image, config.image_size), flip_captioned)
    if config.augment_full_image:
        full = photometric(full, config, seeds[1], 0.0, 0.0)
    views = {"image": full, "caption": caption}

    crop_seeds = iter(seeds[2:])
    global_crops = []
    for index in range(config.num_global_crops):
        crop_seed, flip_seed, photo_seed = next(crop_seeds), next(crop_seeds), next(crop_seeds)
        del flip_seed  # Captioned views flip with the full image.
        crop = random_resized_crop(
            image, config.image_size, config.global_scale, config.aspect_ratio, crop_seed
        )
        crop = _flip(crop, flip_captioned)
        blur = config.global_blur_probabilities[index % len(config.global_blur_probabilities)]
        solar = config.solarize_probabilities[index % len(config.solarize_probabilities)]
        global_crops.append(photometric(crop, config, photo_seed, blur, solar))
    if global_crops:
        views["global_crops"] = tf.stack(global_crops)

    local_crops = []
    for _ in range(config.num_local_crops):
        crop_seed, flip_seed, photo_seed = next(crop_seeds), next(crop_seeds), next(crop_seeds)
        crop = random_resized_crop(
            image, config.local_crop_size, config.local_scale, config.aspect_ratio, crop_seed
        )
        if config.flip != "none":
            crop = tf.image.stateless_random_flip_left_right(crop, flip_seed)
        local_crops.append(photometric(crop, config, photo_seed, config.local_blur_probability, 0))
    if local_crops:
        views["local_crops"] = tf.stack(local_crops)
    return views
