"""The training batch contract between the input pipeline and `SilcModel`.

Both sides import it, and neither imports the other: the `SilcPreprocessor` makes and checks
batches of this format, the model checks what it receives at trace time (static shapes, so
the check costs nothing per step).

A batch is a dict:
    image:        (B, S, S, 3) float in [0, 1], the full image resized to S;
    global_crops: (B, G, S, S, 3) float in [0, 1];
    local_crops:  (B, L, s, s, 3) float in [0, 1];
    text:         (B, T) integer token ids, 0 for padding;
and, from `MultiCropConfig(photometric="accelerator")`, each crop set's photometric
parameters ("global_crop_color" (B, G, 6) with "global_crop_blur" (B, G, K), and the same
for the local crops), which the model applies on the accelerator at the start of its step.
"""

import dataclasses

import keras

IMAGE_KEYS = {
    "image": "(B, S, S, 3)",
    "global_crops": "(B, G, S, S, 3)",
    "local_crops": "(B, L, s, s, 3)",
}

# The photometric parameters that ship with each crop set, and the order of the per-crop
# colour parameters in the "*_crop_color" entries.
PHOTOMETRIC_KEYS = {
    "global_crops": ("global_crop_color", "global_crop_blur"),
    "local_crops": ("local_crop_color", "local_crop_blur"),
}
COLOR_PARAMETERS = ("brightness", "contrast", "saturation", "hue", "grayscale", "solarize")


def required_keys(multi_view_contrastive, self_distillation):
    """The views a model with these switches trains on."""
    keys = ["image", "text"]
    if multi_view_contrastive or self_distillation:
        keys.append("global_crops")
    if self_distillation:
        keys.append("local_crops")
    return keys


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """What a batch must hold. `None` leaves a size unchecked (a model alone does not know
    the crop counts; its preprocessor does)."""

    required: tuple
    patch_size: int
    max_length: int
    image_size: int = None
    num_global_crops: int = None
    num_local_crops: int = None
    local_crop_size: int = None
    same_size_global_crops: bool = False

    def expected(self, key):
        def known(value):
            return "?" if value is None else value

        geometry = (
            f"S={known(self.image_size)}, G={known(self.num_global_crops)}, "
            f"s={known(self.local_crop_size)}, L={known(self.num_local_crops)}, "
            f"T<={self.max_length}; S and s multiples of the patch size {self.patch_size}"
        )
        return f"expected {IMAGE_KEYS.get(key, '(B, T)')} ({geometry})"


def validate_batch(batch, spec):
    """Checks keys, ranks, sizes and dtypes; raises ValueError naming the key."""
    if not hasattr(batch, "keys"):
        raise ValueError(
            f"SilcModel expects each batch to be a dict with keys {list(spec.required)}; got "
            f"{type(batch).__name__}. See the README's 'Training batch format'."
        )
    missing = [key for key in spec.required if key not in batch]
    if missing:
        raise ValueError(
            f"The batch is missing {missing}; it has {sorted(batch.keys())}. "
            + "; ".join(f"'{key}' {spec.expected(key)}" for key in missing)
        )
    batch_sizes = set()
    for key in spec.required:
        shape = tuple(batch[key].shape)
        dtype = keras.backend.standardize_dtype(batch[key].dtype)
        if key == "text":
            _validate_text(shape, dtype, spec)
        else:
            _validate_images(key, shape, dtype, spec)
        if shape[0] is not None:
            batch_sizes.add(shape[0])
    if spec.same_size_global_crops:
        image_size = tuple(batch["image"].shape[1:3])
        crop_size = tuple(batch["global_crops"].shape[2:4])
        if image_size != crop_size:
            raise ValueError(
                f"batch['global_crops'] are {crop_size} but batch['image'] is {image_size}; "
                "with multi_view_contrastive they share the size S. "
                f"{spec.expected('global_crops')}."
            )
    if len(batch_sizes) > 1:
        raise ValueError(
            "The batch's entries disagree on the batch size: "
            f"{ {key: tuple(batch[key].shape) for key in spec.required} }."
        )
    validate_photometric(batch)


def _validate_text(shape, dtype, spec):
    if len(shape) != 2:
        raise ValueError(f"batch['text'] has shape {shape}; {spec.expected('text')}.")
    if "int" not in dtype:
        raise ValueError(
            f"batch['text'] has dtype {dtype}; it must hold integer token ids "
            f"{spec.expected('text')}. Tokenize captions first."
        )
    if shape[1] is not None and shape[1] > spec.max_length:
        raise ValueError(
            f"batch['text'] has length {shape[1]} > max_length {spec.max_length}; "
            f"{spec.expected('text')}."
        )


def _validate_images(key, shape, dtype, spec):
    rank = 4 if key == "image" else 5
    if len(shape) != rank or shape[-1] != 3:
        raise ValueError(f"batch['{key}'] has shape {shape}; {spec.expected(key)}.")
    height, width = shape[-3], shape[-2]
    patch = spec.patch_size
    if height is None or width is None or height % patch or width % patch:
        raise ValueError(
            f"batch['{key}'] has shape {shape}: crops of {height}x{width} are not a multiple "
            f"of the patch size {patch}; {spec.expected(key)}."
        )
    if "float" not in dtype:
        raise ValueError(
            f"batch['{key}'] has dtype {dtype}; images must be floats in [0, 1] (divide "
            f"uint8 images by 255). {spec.expected(key)}."
        )
    side = spec.local_crop_size if key == "local_crops" else spec.image_size
    count = {"global_crops": spec.num_global_crops, "local_crops": spec.num_local_crops}.get(key)
    if (side is not None and (height, width) != (side, side)) or (
        count is not None and shape[1] != count
    ):
        raise ValueError(f"batch['{key}'] has shape {shape}; {spec.expected(key)}.")


def validate_photometric(batch):
    for key, (color_key, blur_key) in PHOTOMETRIC_KEYS.items():
        present = [name for name in (color_key, blur_key) if name in batch]
        if not present:
            continue
        how = (
            f"'{color_key}' (B, N, 6) and '{blur_key}' (B, N, K), K odd, come together with "
            f"'{key}' (N crops), as MultiCropConfig(photometric='accelerator') makes them"
        )
        if len(present) == 1 or key not in batch:
            raise ValueError(f"The batch has {present} without the rest: {how}.")
        crops = tuple(batch[key].shape)
        color, blur = tuple(batch[color_key].shape), tuple(batch[blur_key].shape)
        if (
            len(color) != 3
            or color[-1] != len(COLOR_PARAMETERS)
            or len(blur) != 3
            or blur[-1] is None
            or blur[-1] % 2 == 0
            or color[:2] != crops[:2]
            or blur[:2] != crops[:2]
        ):
            raise ValueError(
                f"batch['{color_key}'] is {color} and batch['{blur_key}'] is {blur} for "
                f"batch['{key}'] of {crops}; {how}."
            )
        if blur[-1] // 2 >= min(crops[2:4]):
            raise ValueError(
                f"batch['{blur_key}'] has kernels of {blur[-1]} taps, too wide for "
                f"{crops[2]}x{crops[3]} crops (reflect padding needs radius < side); lower "
                "MultiCropConfig.blur_sigma."
            )
