"""Multi-crop views, the readers, skip counting and the training pipeline."""

import colorsys
import io
import json
import os
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import hash_tokenizer
from conftest import tiny_model

from keras_silc import PRESETS
from keras_silc import data
from keras_silc.batch_format import COLOR_PARAMETERS
from keras_silc.data import augment

CAPTIONS = [
    "a red bag on the left",
    "a blue sneaker on the right",
    "a white dress at the top left",
    "a green coat at the bottom right",
]


def _images(count, height=40, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _jpeg(image):
    return tf.io.encode_jpeg(image).numpy()


def _seed(i):
    return tf.constant([i, 7], tf.int64)


# ------------------------------------------------------------------------ views
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_views_match_the_batch_format_of_every_preset(preset):
    preset_config = PRESETS[preset]["config"]
    config = data.SilcPreprocessor(
        image_size=preset_config["vision"]["image_size"],
        patch_size=preset_config["vision"]["patch_size"],
        **{key: preset_config[key] for key in data.preprocessor.GEOMETRY_KEYS},
    ).multi_crop_config()
    image = tf.random.stateless_uniform([300, 280, 3], [1, 2])
    views = data.multi_crop_views(image, tf.constant("a caption"), config, _seed(0))
    s, g, ls, ln = (
        config.image_size,
        config.num_global_crops,
        config.local_crop_size,
        config.num_local_crops,
    )
    assert views["image"].shape == (s, s, 3)
    assert views["global_crops"].shape == (g, s, s, 3)
    assert views["local_crops"].shape == (ln, ls, ls, 3)
    for key in ("image", "global_crops", "local_crops"):
        assert views[key].dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(views[key])) <= float(tf.reduce_max(views[key])) <= 1.0


def test_uint8_pixels_give_the_views_of_their_float_image():
    # The pipeline keeps decoded pixels in uint8 and scales after resizing; the views must be
    # those of the float image, whether the crops shrink (area) or grow (bilinear).
    pixels = tf.cast(tf.random.stateless_uniform([300, 280, 3], [1, 2], maxval=256), tf.uint8)
    floats = tf.image.convert_image_dtype(pixels, tf.float32)
    for size, local_size in ((64, 32), (512, 96)):
        config = data.MultiCropConfig(image_size=size, local_crop_size=local_size)
        views = [
            data.multi_crop_views(x, tf.constant("a"), config, _seed(3)) for x in (pixels, floats)
        ]
        for key in ("image", "global_crops", "local_crops"):
            assert views[0][key].dtype == tf.float32
            np.testing.assert_allclose(views[0][key], views[1][key], atol=1e-5)


@pytest.mark.parametrize("scale", [(0.4, 1.0), (0.05, 0.4)])
def test_crop_areas_and_ratios_fall_in_their_ranges(scale):
    height, width = 120, 100
    areas, ratios = [], []
    for i in range(400):
        y, x, h, w = (
            int(v) for v in augment.sample_crop_box((height, width), scale, (0.75, 4 / 3), _seed(i))
        )
        assert 0 <= y and 0 <= x and y + h <= height and x + w <= width
        areas.append(h * w / (height * width))
        ratios.append(w / h)
    areas, ratios = np.array(areas), np.array(ratios)
    # Rounding to whole pixels moves the area by a pixel row or column at most.
    slack = 2.5 / min(height, width)
    assert areas.min() >= scale[0] - slack and areas.max() <= scale[1] + slack
    assert ratios.min() >= 0.75 - 0.05 and ratios.max() <= 4 / 3 + 0.05
    # The whole range is used. (Large crops whose ratio does not fit the image are redrawn,
    # as in torchvision, which moves the mean of global crops below the middle.)
    span = scale[1] - scale[0]
    assert areas.min() < scale[0] + 0.1 * span and areas.max() > scale[1] - 0.1 * span
    if scale[1] <= 0.5:
        np.testing.assert_allclose(areas.mean(), sum(scale) / 2, atol=0.08 * span)


def test_swap_left_right_swaps_whole_words_only():
    out = augment.swap_left_right(
        tf.constant(["a bag on the left, a Right shoe", "leftover bright stuff", "top right"])
    )
    assert [s.decode() for s in out.numpy()] == [
        "a bag on the right, a Left shoe",
        "leftover bright stuff",
        "top left",
    ]


def test_captioned_views_flip_together_with_the_caption():
    # The left half is black, the right half white: a flip is visible in the mean of a side.
    image = tf.concat([tf.zeros([32, 16, 3]), tf.ones([32, 16, 3])], axis=1)
    config = data.MultiCropConfig(
        image_size=32,
        num_global_crops=2,
        local_crop_size=16,
        num_local_crops=2,
        global_scale=(1.0, 1.0),
        aspect_ratio=(1.0, 1.0),
        color_jitter_probability=0.0,
        grayscale_probability=0.0,
        global_blur_probabilities=(0.0,),
        local_blur_probability=0.0,
        solarize_probabilities=(0.0,),
    )
    flips = []
    for i in range(16):
        views = data.multi_crop_views(image, tf.constant("shoe on the left"), config, _seed(i))
        flipped = views["caption"].numpy().decode() == "shoe on the right"
        flips.append(flipped)
        for view in [views["image"], *tf.unstack(views["global_crops"])]:
            left_is_bright = float(tf.reduce_mean(view[:, :16])) > 0.5
            assert left_is_bright == flipped
    assert 0 < sum(flips) < len(flips)


def _numpy_blur(image, sigma, radius):
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, [(radius, radius), (radius, radius), (0, 0)], mode="reflect")
    rows = np.stack(
        [
            np.convolve(c, kernel, "valid")
            for c in padded.transpose(0, 2, 1).reshape(-1, padded.shape[1])
        ]
    )
    rows = rows.reshape(padded.shape[0], 3, -1).transpose(0, 2, 1)
    cols = np.stack(
        [
            np.convolve(c, kernel, "valid")
            for c in rows.transpose(1, 2, 0).reshape(-1, rows.shape[0])
        ]
    )
    return cols.reshape(rows.shape[1], 3, -1).transpose(2, 0, 1)


def _numpy_fused_jitter(x, b, c, s, hue, grey):
    """Hand-written reference: the four factors one after the other without clipping, hue as
    a rotation of NTSC YIQ's chroma plane, grayscale, then one clip."""
    luma = np.array([0.2989, 0.5870, 0.1140])
    yiq = np.array(
        [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
    )
    out = np.empty_like(x)
    for n in range(len(x)):
        y = x[n] * b[n]
        y = c[n] * y + (1 - c[n]) * (y @ luma).mean()
        y = s[n] * y + (1 - s[n]) * (y @ luma)[..., None]
        angle = -2 * np.pi * hue[n]
        rotation = np.array(
            [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
        )
        y = y @ (np.linalg.inv(yiq) @ rotation @ yiq).T
        if grey[n]:
            y = np.repeat((y @ luma)[..., None], 3, axis=-1)
        out[n] = np.clip(y, 0, 1)
    return out


def _photometric(images, color, sigmas=None, radius=3):
    """`apply_photometric` on one crop set (N, H, W, 3) with per-crop (N, 6) parameters and
    blur sigmas (default: no blur), as numpy."""
    from keras_silc.layers import apply_photometric

    sigmas = np.zeros(len(images)) if sigmas is None else sigmas
    blur = augment.gaussian_kernels(sigmas, radius).numpy()
    color = np.asarray(color, np.float32)
    out = apply_photometric(np.asarray(images)[None], color[None], blur[None])
    return keras.ops.convert_to_numpy(out)[0]


def _color(n, **values):
    """(n, 6) colour parameters that change nothing, but for `values`."""
    color = np.zeros((n, 6), np.float32)
    color[:, :3] = 1.0  # brightness, contrast and saturation factors
    for name, value in values.items():
        color[:, COLOR_PARAMETERS.index(name)] = value
    return color


def test_each_photometric_op_alone_is_torchvisions():
    images = tf.random.stateless_uniform([3, 12, 12, 3], [3, 4]).numpy()
    x = images.astype(np.float64)
    luma = (x * np.array([0.2989, 0.5870, 0.1140])).sum(-1, keepdims=True)
    factors = np.array([0.6, 1.0, 1.4])
    f = factors[:, None, None, None]
    mean = luma.mean(axis=(1, 2, 3), keepdims=True)
    for name, expected in (
        ("brightness", np.clip(x * f, 0, 1)),
        ("contrast", np.clip(f * x + (1 - f) * mean, 0, 1)),
        ("saturation", np.clip(f * x + (1 - f) * luma, 0, 1)),
    ):
        out = _photometric(images, _color(3, **{name: factors}))
        np.testing.assert_allclose(out, expected, atol=2e-6, err_msg=name)
    out = _photometric(images, _color(3, grayscale=[1.0, 0.0, 1.0]))
    np.testing.assert_allclose(out[0], np.repeat(luma[0], 3, axis=-1), atol=2e-6)
    np.testing.assert_allclose(out[1], x[1], atol=2e-6)
    out = _photometric(images, _color(3, solarize=[1.0, 0.0, 1.0]))
    np.testing.assert_allclose(out[::2], np.where(x >= 0.5, 1 - x, x)[::2], atol=1e-6)
    np.testing.assert_allclose(out[1], x[1], atol=1e-6)
    # Each crop is blurred with its own sigma; sigma 0 leaves a crop unchanged.
    out = _photometric(images, _color(3), sigmas=[1.5, 0.0, 0.7], radius=6)
    np.testing.assert_allclose(out[0], _numpy_blur(x[0], 1.5, 6), atol=1e-5)
    np.testing.assert_allclose(out[1], x[1], atol=1e-6)
    np.testing.assert_allclose(out[2], _numpy_blur(x[2], 0.7, 6), atol=1e-5)


def test_colour_jitter_is_one_affine_map_clipped_once():
    images = tf.random.stateless_uniform([4, 10, 10, 3], [7, 8]).numpy()
    x = images.astype(np.float64)
    b, c, s = [0.6, 1.3, 1.0, 1.1], [1.4, 0.7, 1.0, 0.9], [0.8, 1.2, 1.0, 1.0]
    hue, grey = [0.1, -0.25, 0.0, 0.05], [0.0, 0.0, 0.0, 1.0]
    color = _color(4, brightness=b, contrast=c, saturation=s, hue=hue, grayscale=grey)
    np.testing.assert_allclose(
        _photometric(images, color), _numpy_fused_jitter(x, b, c, s, hue, grey), atol=2e-5
    )
    # The hue turns the same way as HSV's (colorsys): a small shift of saturated colours
    # moves their HSV hue by about the same amount.
    colours = np.array([[[[0.7, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.3, 0.7], [0.6, 0.5, 0.1]]]])
    turned = _photometric(np.tile(colours, (1, 4, 1, 1)).astype(np.float32), _color(1, hue=0.03))
    shifts = [
        (colorsys.rgb_to_hsv(*after)[0] - colorsys.rgb_to_hsv(*before)[0] + 0.5) % 1.0 - 0.5
        for before, after in zip(colours[0, 0], turned[0, 0], strict=True)
    ]
    np.testing.assert_allclose(shifts, 0.03, atol=0.015)
    # The option of torchvision's ops one after the other is gone, with what to do.
    with pytest.raises(ValueError, match="color_jitter='exact'.*removed.*Drop the argument"):
        data.MultiCropConfig(color_jitter="exact")


def test_host_and_accelerator_run_one_photometric_implementation():
    """The same code: on the host inside tf.data (Keras's TensorFlow backend whatever the
    Keras backend), on the accelerator on the model's backend; against numpy, and the
    pipeline's views with photometric="accelerator" finished by the model's op equal the
    host's views (same seeds, same parameters)."""
    from keras_silc.layers import apply_photometric

    images = tf.random.stateless_uniform([1, 4, 14, 12, 3], [7, 8])
    x = images.numpy()[0].astype(np.float64)
    b, c, s = [0.6, 1.3, 1.0, 1.1], [1.4, 0.7, 1.0, 0.9], [0.8, 1.2, 1.0, 1.0]
    hue, grey, solar = [0.1, -0.25, 0.0, 0.05], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]
    color = np.stack([b, c, s, hue, grey, solar], axis=-1)[None].astype(np.float32)
    sigmas = [1.5, 0.0, 0.7, 1.0]
    blur = augment.gaussian_kernels(sigmas, 3).numpy()[None]
    out = keras.ops.convert_to_numpy(apply_photometric(images.numpy(), color, blur))[0]
    jittered = _numpy_fused_jitter(x, b, c, s, hue, grey)
    for n, sigma in enumerate(sigmas):
        expected = _numpy_blur(jittered[n], sigma, 3) if sigma else jittered[n]
        expected = np.minimum(expected, 1 - expected) if solar[n] else expected
        np.testing.assert_allclose(out[n], expected, atol=3e-5)
    # Inside a tf.data map it runs on TensorFlow's ops by itself, as Keras's preprocessing
    # layers do, and gives the same crops.
    mapped = tf.data.Dataset.from_tensors((images, color, blur)).map(
        lambda *inputs: apply_photometric(*inputs)
    )
    np.testing.assert_allclose(next(iter(mapped)).numpy()[0], out, atol=1e-6)

    image = tf.constant(np.random.RandomState(0).randint(0, 256, (40, 36, 3)).astype("uint8"))
    geometry = {"image_size": 16, "local_crop_size": 8, "num_local_crops": 3}
    host_config = data.MultiCropConfig(**geometry)
    config = data.MultiCropConfig(photometric="accelerator", **geometry)
    for i in range(4):
        host = data.multi_crop_views(image, tf.constant("a bag"), host_config, _seed(i))
        views = data.multi_crop_views(image, tf.constant("a bag"), config, _seed(i))
        np.testing.assert_array_equal(views["image"], host["image"])
        assert views["global_crop_color"].shape == (2, 6)
        assert views["local_crop_blur"].shape[0] == 3 and views["local_crop_blur"].shape[1] % 2
        for name in ("global", "local"):
            finished = apply_photometric(
                *(
                    views[f"{name}_{key}"].numpy()[None]
                    for key in ("crops", "crop_color", "crop_blur")
                )
            )
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(finished)[0], host[f"{name}_crops"], atol=1e-6
            )
    with pytest.raises(ValueError, match="photometric must be"):
        data.MultiCropConfig(photometric="gpu")


def test_fit_with_photometric_on_the_accelerator_equals_the_host_pipeline():
    pairs = data.from_arrays(_images(8), CAPTIONS * 2)
    model = tiny_model()
    model.compile()
    batches = {
        where: next(iter(_pipeline(model, pairs, augmentation={"photometric": where})))
        for where in ("host", "accelerator")
    }
    host, accelerated = batches["host"], batches["accelerator"]
    assert {"global_crop_color", "global_crop_blur", "local_crop_color"} <= set(accelerated)
    assert not {"global_crop_color", "local_crop_blur"} & set(host)
    np.testing.assert_array_equal(accelerated["image"], host["image"])
    np.testing.assert_array_equal(accelerated["text"], host["text"])
    # The model's step finishes the crops: the same batch, and so the same losses.
    prepared = model.prepare_batch({k: v.numpy() for k, v in accelerated.items()})
    assert set(prepared) == set(host)
    for key in ("global_crops", "local_crops"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(prepared[key]), host[key].numpy(), atol=1e-5
        )
    loss, _ = model.compute_losses(prepared)
    host_loss, _ = model.compute_losses({k: v.numpy() for k, v in host.items()})
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss), keras.ops.convert_to_numpy(host_loss), rtol=1e-5
    )
    # And `fit` trains from the accelerator pipeline.
    dataset = _pipeline(model, pairs, augmentation={"photometric": "accelerator"})
    history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    # A half-shipped or misshapen parameter set is refused with what belongs together.
    model = tiny_model()
    batch = {
        k: v.numpy()
        for k, v in next(
            iter(_pipeline(model, pairs, augmentation={"photometric": "accelerator"}))
        ).items()
    }
    with pytest.raises(ValueError, match="without the rest"):
        model.preprocessor.validate_batch(
            {k: v for k, v in batch.items() if k != "local_crop_blur"}
        )
    with pytest.raises(ValueError, match="K odd"):
        model.preprocessor.validate_batch(
            {**batch, "global_crop_blur": batch["global_crop_blur"][..., :-1]}
        )


def test_photometric_probabilities_are_per_crop():
    config = data.MultiCropConfig(
        color_jitter_probability=0.0, grayscale_probability=0.0, blur_sigma=(28.0, 28.0)
    )
    images = tf.random.stateless_uniform([64, 8, 8, 3], [5, 6])
    out = augment.photometric(images, config, _seed(0), [0.5] * 64, [0.0] * 64).numpy()
    # sigma 28 at 224 px is 1 at these 8 px crops.
    unchanged = np.all(np.isclose(out, images.numpy(), atol=1e-6), axis=(1, 2, 3))
    assert 16 < unchanged.sum() < 48  # about half of the crops are blurred
    always = augment.photometric(images, config, _seed(0), [0.0] * 64, [1.0] * 64).numpy()
    np.testing.assert_allclose(always, np.minimum(images, 1 - images.numpy()), atol=1e-7)
    gray = config.replace(grayscale_probability=1.0)
    out = augment.photometric(images, gray, _seed(1), [0.0] * 64, [0.0] * 64).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)


def test_local_colour_jitter_leaves_captioned_views_alone():
    red = tf.concat([tf.fill([32, 32, 1], 0.9), tf.fill([32, 32, 2], 0.1)], axis=-1)
    config = data.MultiCropConfig(
        image_size=32,
        num_global_crops=2,
        local_crop_size=16,
        num_local_crops=8,
        hue=0.0,
        saturation=0.0,
        local_hue=0.5,
        grayscale_probability=0.0,
    )
    views = data.multi_crop_views(red, tf.constant("a red bag"), config, _seed(0))
    for view in [views["image"], *tf.unstack(views["global_crops"])]:
        mean = tf.reduce_mean(view, axis=[0, 1]).numpy()
        assert mean[0] > mean[1] and mean[0] > mean[2]  # still red
    dominant = [int(np.argmax(tf.reduce_mean(c, axis=[0, 1]))) for c in views["local_crops"]]
    assert len(set(dominant)) > 1  # some local crops are no longer red


def test_bad_augmentation_arguments_are_refused():
    with pytest.raises(ValueError, match="local_scale"):
        data.MultiCropConfig(local_scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="flip"):
        data.MultiCropConfig(flip="sometimes")
    cases = [
        ({"global_scale": 0.5}, r"global_scale=0.5: must be a \(min, max\) pair"),
        ({"aspect_ratio": (0.5, 1, 2)}, r"aspect_ratio=\(0.5, 1, 2\): must be a \(min, max\)"),
        ({"image_size": "32"}, "image_size='32': must be an int"),
        ({"hue": None}, r"hue=None: must be a hue shift in \[0, 0.5\]"),
        ({"global_blur_probabilities": ()}, "global_blur_probabilities=\\(\\): must be a non"),
        ({"grayscale_probability": 2.0}, r"grayscale_probability=2.0: must be a probability"),
        ({"brightness": -1}, "brightness=-1: must be a jitter strength"),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            data.MultiCropConfig(**settings)
    # Through the preprocessor, where a user sets them.
    with pytest.raises(ValueError, match="MultiCropConfig hue=None"):
        tiny_model().preprocessor.multi_crop_config(hue=None)
    with pytest.raises(ValueError, match="augmentation must be a dict"):
        data.SilcPreprocessor(augmentation=["flip"])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got -1"):
        tiny_model().preprocessor.example_batch(-1)
    with pytest.raises(ValueError, match="not the path 'vocab.model'"):
        data.SilcPreprocessor(tokenizer="vocab.model")


# --------------------------------------------------------------------- pipeline
def _pipeline(model, pairs, **kwargs):
    kwargs.setdefault("seed", 3)
    kwargs.setdefault("deterministic", True)
    return data.training_dataset(pairs, model.preprocessor, 4, tokenizer=hash_tokenizer(), **kwargs)


def test_training_batches_have_the_models_format_and_repeat_with_a_seed():
    model = tiny_model()
    pairs = data.from_arrays(_images(12), (CAPTIONS * 3)[:12])
    first = [b for b in _pipeline(model, pairs).take(3)]
    again = [b for b in _pipeline(model, pairs).take(3)]
    other = [b for b in _pipeline(model, pairs, seed=4).take(3)]
    batch = first[0]
    assert set(batch) == {"image", "global_crops", "local_crops", "text"}
    assert batch["image"].shape == (4, 32, 32, 3)
    assert batch["global_crops"].shape == (4, 2, 32, 32, 3)
    assert batch["local_crops"].shape == (4, 4, 16, 16, 3)
    assert batch["text"].shape == (4, 16) and batch["text"].dtype == tf.int32
    model.preprocessor.validate_batch({k: v.numpy() for k, v in batch.items()})
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert not np.array_equal(first[0]["local_crops"].numpy(), other[0]["local_crops"].numpy())


def test_only_the_views_the_model_uses_are_made():
    clip = tiny_model(multi_view_contrastive=False, ema_teacher=False, self_distillation=False)
    batch = next(iter(_pipeline(clip, data.from_arrays(_images(4), CAPTIONS))))
    assert set(batch) == {"image", "text"}


def test_pipeline_errors_say_what_is_wrong():
    model = tiny_model()
    pairs = data.from_arrays(_images(4), CAPTIONS)
    with pytest.raises(ValueError, match="tokenizer"):
        data.training_dataset(pairs, model.preprocessor, 4)
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        data.training_dataset(
            {"image": _images(4)}, model.preprocessor, 4, tokenizer=hash_tokenizer()
        )
    with pytest.raises(ValueError, match="'caption'"):
        data.training_dataset(
            tf.data.Dataset.from_tensor_slices({"image": _images(4)}),
            model,
            4,
            tokenizer=hash_tokenizer(),
        )
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        data.training_dataset(pairs, model, 0, tokenizer=hash_tokenizer())
    with pytest.raises(ValueError, match="batch_size must be at least 2: the other pairs"):
        data.training_dataset(pairs, model, 1, tokenizer=hash_tokenizer())
    for arguments, message in [
        ({"shuffle_buffer": -1}, "shuffle_buffer must be an int >= 0"),
        ({"start_example": -3}, "start_example must be an int >= 0"),
        ({"image_dtype": "uint8"}, "image_dtype must be one of"),
        ({"augmentation": "none"}, "augmentation must be a MultiCropConfig or a dict"),
    ]:
        with pytest.raises(ValueError, match=message):
            data.training_dataset(pairs, model, 2, tokenizer=hash_tokenizer(), **arguments)
    # Fewer pairs than one batch, not repeated: an empty dataset, refused with the way out.
    with pytest.raises(ValueError, match="The 4 pairs make no full batch of 8.*drop_remainder"):
        data.training_dataset(pairs, model, 8, tokenizer=hash_tokenizer(), repeat=False)
    last = data.training_dataset(
        pairs, model, 8, tokenizer=hash_tokenizer(), repeat=False, drop_remainder=False
    )
    assert [len(batch["text"]) for batch in last] == [4]
    # A stream in which nothing decodes, or nothing has a caption, would never yield a batch
    # (repeated, it loops for ever): the first pairs are looked at before it is built.
    junk = data.from_arrays([b"not a jpeg", b"nor this"], CAPTIONS[:2])
    with pytest.raises(ValueError, match="None of the first 2 captioned images decodes"):
        data.training_dataset(junk, model, 2, tokenizer=hash_tokenizer())
    silent = data.from_arrays(_images(4), [""] * 4)
    with pytest.raises(ValueError, match="None of the first 4 pairs has a non-empty caption"):
        data.training_dataset(silent, model, 2, tokenizer=hash_tokenizer())
    # A tokenizer that returns what is not (N, T) integer ids is refused before any
    # batch is made (tf.cast of strings failed only when iterating; floats were truncated).
    for tokenizer, returns in [
        (lambda captions: tf.strings.split(captions).to_tensor(""), "string values"),
        (tf.strings.split, "ragged ids"),
        (lambda captions: tf.zeros_like(captions, tf.int32), r"shape \(2,\)"),
        (lambda captions: tf.fill([tf.size(captions), 4], 0.5), "float32 values"),
    ]:
        with pytest.raises(ValueError, match=f"integer token ids.*; it returns {returns}"):
            data.training_dataset(pairs, model, 2, tokenizer=tokenizer)


# ---------------------------------------------------------------------- readers
def _write_tar(path, samples, truncate=False):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key, members in samples:
            for extension, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    payload = buffer.getvalue()
    if truncate:
        payload = payload[: len(payload) // 2 + 100]
    with open(path, "wb") as handle:
        handle.write(payload)
    return path


def _webdataset_fixture(folder):
    images = _images(6)
    good = [
        (f"{i:04d}", {"jpg": _jpeg(images[i]), "txt": CAPTIONS[i % 4].encode()}) for i in range(4)
    ]
    bad = [
        ("0100", {"jpg": b"this is not an image", "txt": b"a corrupt image"}),
        ("0101", {"jpg": _jpeg(images[4]), "txt": b"   "}),  # empty caption
        ("0102", {"jpg": _jpeg(images[5])}),  # no caption
        (
            "0103",
            {
                "png": tf.io.encode_png(images[5]).numpy(),
                "json": json.dumps({"caption": ["first caption", "second caption"]}).encode(),
            },
        ),
    ]
    _write_tar(os.path.join(folder, "shard-00000.tar"), good)
    _write_tar(os.path.join(folder, "shard-00001.tar"), bad)
    # A long shard cut in half: the samples before the cut are kept.
    many = [
        (f"2{i:03d}", {"jpg": _jpeg(_images(1, seed=i)[0]), "txt": b"a blue bag"}) for i in range(8)
    ]
    _write_tar(os.path.join(folder, "shard-00002.tar"), many, truncate=True)
    return os.path.join(folder, "shard-{00000..00002}.tar")


def _drain(pairs_or_batches, limit=1000):
    return list(pairs_or_batches.take(limit).as_numpy_iterator())


def test_webdataset_arguments_are_checked(tmp_path):
    shards = data.write_webdataset(
        str(tmp_path / "wds" / "{}.tar"), _images(4), CAPTIONS, samples_per_shard=2
    )
    with pytest.raises(ValueError, match="is a folder; name the WebDataset shards in it"):
        data.from_webdataset(str(tmp_path / "wds"))
    with pytest.raises(TypeError, match="as a path, a glob"):
        data.from_webdataset(5)
    with pytest.raises(ValueError, match=r"shard_index must be in \[0, 2\), got 5"):
        data.from_webdataset(shards, shard_index=5, num_shards=2)
    with pytest.raises(ValueError, match="Pass shard_index and num_shards together"):
        data.from_webdataset(shards, shard_index=1)
    with pytest.raises(ValueError, match="max_captions must be a positive integer"):
        data.from_webdataset(shards, max_captions=0)
    with pytest.raises(ValueError, match="cycle_length must be a positive integer"):
        data.from_webdataset(shards, cycle_length=0)
    second = _drain(data.from_webdataset(shards, shard_index=1, num_shards=2))
    assert len(second) == 2


def test_webdataset_reader_skips_and_counts_bad_samples(tmp_path):
    pattern = _webdataset_fixture(str(tmp_path))
    pairs = data.from_webdataset(pattern, max_captions=2, shuffle_shards=False)
    samples = _drain(pairs)
    counts = pairs.stats.as_dict()
    assert counts["incomplete_samples"] == 1
    assert counts["truncated_shards"] == 1
    captions = [list(map(bytes.decode, s["caption"])) for s in samples]
    assert ["first caption", "second caption"] in captions
    assert ["a red bag on the left", ""] in captions
    kept_from_truncated = sum(c[0] == "a blue bag" for c in captions)
    assert 0 < kept_from_truncated < 8
    # The pipeline then drops the corrupt image and the empty caption, and counts them.
    model = tiny_model()
    batches = _drain(_pipeline(model, pairs, repeat=False, shuffle_buffer=0))
    stats = pairs.stats.as_dict()
    assert stats["undecodable_images"] == 1
    assert stats["empty_captions"] == 1
    assert stats["examples_decoded"] == len(samples) - 2
    assert len(batches) == (len(samples) - 2) // 4


def test_webdataset_shards_split_across_hosts(tmp_path):
    pattern = _webdataset_fixture(str(tmp_path))
    parts = [
        {
            c[0]
            for c in (
                s["caption"]
                for s in _drain(
                    data.from_webdataset(pattern, shard_index=i, num_shards=2, shuffle_shards=False)
                )
            )
        }
        for i in range(2)
    ]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    with pytest.raises(ValueError, match="cannot be split over 4 hosts"):
        data.from_webdataset(pattern, shard_index=0, num_shards=4)


def test_missing_files_fail_at_once_and_say_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="No WebDataset shards match"):
        data.from_webdataset(str(tmp_path / "*.tar"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.from_tfrecord(str(tmp_path / "missing.tfrecord"))
    with pytest.raises(FileNotFoundError, match="caption table"):
        data.from_csv(str(tmp_path / "missing.csv"))


def _example(image_bytes, captions):
    feature = {
        "jpeg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "texts": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[c.encode() for c in captions])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_reader_with_field_names_and_a_corrupt_image(tmp_path):
    path = str(tmp_path / "pairs.tfrecord")
    images = _images(5)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(4):
            writer.write(_example(_jpeg(images[i]), [CAPTIONS[i], "another"]))
            if i == 1:
                writer.write(_example(b"garbage", ["corrupt"]))
    with pytest.raises(KeyError, match=r"'image'.*features are \['jpeg', 'texts'\]"):
        data.from_tfrecord(path)
    pairs = data.from_tfrecord(path, image_key="jpeg", caption_key="texts", max_captions=2)
    samples = _drain(pairs)
    assert len(samples) == 5 and samples[0]["caption"].shape == (2,)
    batches = _drain(_pipeline(tiny_model(), pairs, repeat=False, shuffle_buffer=0))
    assert len(batches) == 1 and pairs.stats.as_dict()["undecodable_images"] == 1

    # Mistakes: not a TFRecord file, the wrong compression, a number feature for the caption.
    (tmp_path / "table.csv").write_text("image,caption\na.jpg,a bag\n")
    with pytest.raises(ValueError, match="does not read as a TFRecord file with no compression"):
        data.from_tfrecord(str(tmp_path / "table.csv"))
    with pytest.raises(ValueError, match="with GZIP"):
        data.from_tfrecord(path, compression_type="GZIP", image_key="jpeg", caption_key="texts")
    with pytest.raises(ValueError, match="compression_type must be None, 'GZIP' or 'ZLIB'"):
        data.from_tfrecord(path, compression_type="zip")
    numbers = str(tmp_path / "numbers.tfrecord")
    with tf.io.TFRecordWriter(numbers) as writer:
        feature = {
            "jpeg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_jpeg(images[0])])),
            "lab": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
        }
        writer.write(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    with pytest.raises(ValueError, match="Feature 'lab' .* holds int64 values; the caption"):
        data.from_tfrecord(numbers, image_key="jpeg", caption_key="lab")


def test_csv_and_jsonl_readers_group_captions_and_count_missing_images(tmp_path):
    images = _images(3)
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    rows = [
        ("0.png", "a red bag"),
        ("0.png", "a bag in red"),
        ("gone.png", "a missing image"),
        ("1.png", "a blue shoe"),
        ("2.png", "a white dress"),
    ]
    table = tmp_path / "pairs.csv"
    table.write_text("file,text\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n")
    with pytest.raises(KeyError, match=r"Column 'image' not found.*\['file', 'text'\]"):
        data.from_csv(str(table))
    pairs = data.from_csv(str(table), image_column="file", caption_column="text")
    samples = _drain(pairs)
    assert len(samples) == 4
    assert [c.decode() for c in samples[0]["caption"]] == ["a red bag", "a bag in red"]
    batches = _drain(
        data.training_dataset(
            pairs, tiny_model(), 3, tokenizer=hash_tokenizer(), repeat=False, shuffle_buffer=0
        )
    )
    assert len(batches) == 1 and pairs.stats.as_dict()["undecodable_images"] == 1

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"image": f"{i}.png", "caption": [CAPTIONS[i], "x"]}) for i in range(3)
        )
    )
    samples = _drain(data.from_csv(str(jsonl)))
    assert [c.decode() for c in samples[2]["caption"]] == [CAPTIONS[2], "x"]


def test_caption_table_mistakes_name_the_file_and_row(tmp_path):
    (tmp_path / "0.png").write_bytes(tf.io.encode_png(_images(1)[0]).numpy())
    good = json.dumps({"image": "0.png", "caption": "a red bag"})
    with pytest.raises(ValueError, match="is a folder: pass the .csv"):
        data.from_csv(str(tmp_path))
    for name, second_row, message in [
        ("broken", "{not json", "broken.jsonl, line 2: not a JSON object"),
        ("listed", '["0.png", "a bag"]', "row 2: a row must be an object"),
        ("gap", '{"image": "0.png"}', "Row 2 of .*gap.jsonl' has no 'caption' field"),
    ]:
        table = tmp_path / f"{name}.jsonl"
        table.write_text(f"{good}\n{second_row}\n")
        with pytest.raises(ValueError, match=message):
            data.from_csv(str(table))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,caption\n0.png,un caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv' is not UTF-8 text"):
        data.from_csv(str(latin))
    ok = tmp_path / "ok.jsonl"
    ok.write_text(good)
    with pytest.raises(ValueError, match="max_captions must be a positive integer"):
        data.from_csv(str(ok), max_captions=-1)
    # A .json file may hold one array of rows.
    array = tmp_path / "rows.json"
    array.write_text(json.dumps([{"image": "0.png", "caption": "a red bag"}]))
    assert [c.decode() for c in _drain(data.from_csv(str(array)))[0]["caption"]] == ["a red bag"]


def test_tfds_reader_maps_fields(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(KeyError, match="Field 'caption' not found"):
            data.from_tfds("coco_captions", caption_key="caption")
        pairs = data.from_tfds("coco_captions", split="train", max_captions=5)
        samples = _drain(pairs)
        with pytest.raises(ValueError, match="'label' of 'mnist' holds int64 values"):
            data.from_tfds("mnist", caption_key="label")
        with pytest.raises(ValueError, match="'objects/bbox' of 'coco_captions' has shape"):
            data.from_tfds("coco_captions", image_key="objects/bbox")
    assert len(samples) == 6
    assert samples[0]["image"].ndim == 3 and samples[0]["caption"].shape == (5,)
    # Not prepared (no mock): the message says how to prepare it, not TFDS's assertion.
    with pytest.raises(FileNotFoundError, match="not prepared under.*tfds build mnist"):
        data.from_tfds("mnist", caption_key="label", data_dir=str(tmp_path / "empty"))


def test_readers_honour_the_keys_and_give_labels(tmp_path):
    images = _images(3)
    png = [tf.io.encode_png(255 - image).numpy() for image in images]
    samples = [
        (
            f"{i:04d}",
            {
                "jpg": _jpeg(images[i]),
                "seg.png": png[i],
                "cls": str(i).encode(),
                "json": json.dumps({"title": [CAPTIONS[i], "x"], "name": f"c{i}"}).encode(),
            },
        )
        for i in range(3)
    ]
    shard = _write_tar(str(tmp_path / "shard-0.tar"), samples)
    # WebDataset: the image by its extension, the captions from a .json field, the label
    # from a .cls file or a .json field.
    pairs = data.from_webdataset(
        shard, image_key="seg.png", caption_key="title", label_key="cls", max_captions=2
    )
    got = sorted(_drain(pairs), key=lambda s: s["label"])
    assert [s["label"].decode() for s in got] == ["0", "1", "2"]
    assert [s["image"] for s in got] == png
    assert [c.decode() for c in got[1]["caption"]] == [CAPTIONS[1], "x"]
    got = _drain(
        data.from_webdataset(shard, image_key="webp;jpg", caption_key="title", label_key="name")
    )
    assert sorted(s["label"].decode() for s in got) == ["c0", "c1", "c2"]
    assert {s["image"] for s in got} == {_jpeg(image) for image in images}
    # No .txt: the default caption is the .json's "caption", which these samples lack.
    files = r"\['cls', 'jpg', 'json', 'seg.png'\] and their .json the fields \['name', 'title'\]"
    with pytest.raises(KeyError, match=r"caption_key unset \(a .txt, or a .json caption.*" + files):
        data.from_webdataset(shard)
    with pytest.raises(KeyError, match=r"image_key='tif', label_key='label'"):
        data.from_webdataset(shard, image_key="tif", caption_key="title", label_key="label")
    written = data.write_webdataset(
        str(tmp_path / "written-{}.tar"), images, CAPTIONS[:3], labels=[5, 6, 7]
    )
    got = _drain(data.from_webdataset(written, label_key="cls", shuffle_shards=False))
    assert [(s["caption"][0].decode(), s["label"].decode()) for s in got] == list(
        zip(CAPTIONS[:3], ["5", "6", "7"], strict=True)
    )
    # TFRecord: an int64 label feature; CSV: a label column.
    path = str(tmp_path / "pairs.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(3):
            example = tf.train.Example.FromString(_example(_jpeg(images[i]), [CAPTIONS[i]]))
            example.features.feature["class"].int64_list.value.append(7 * i)
            writer.write(example.SerializeToString())
    pairs = data.from_tfrecord(path, image_key="jpeg", caption_key="texts", label_key="class")
    assert sorted(s["label"].decode() for s in _drain(pairs)) == ["0", "14", "7"]
    with pytest.raises(KeyError, match=r"\['label'\] not found"):
        data.from_tfrecord(path, image_key="jpeg", caption_key="texts", label_key="label")
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    table = tmp_path / "pairs.csv"
    table.write_text("image,caption,kind\n0.png,a,bag\n0.png,b,hat\n1.png,c,shoe\n")
    pairs = data.from_csv(str(table), label_column="kind")
    assert [s["label"].decode() for s in _drain(pairs)] == ["bag", "shoe"]
    with pytest.raises(KeyError, match="Column 'label' not found"):
        data.from_csv(str(table), label_column="label")


def test_evaluation_arrays_resize_and_skip_what_cannot_be_evaluated():
    flat = np.broadcast_to(np.array([30, 120, 250], np.uint8), (3, 40, 48, 3)).copy()
    images = [_jpeg(_images(1)[0]), b"not an image", tf.io.encode_png(flat[0]).numpy()]
    images += [tf.io.encode_png(flat[1]).numpy()] * 2
    pairs = data.from_arrays(images, [["a", ""], ["b", "c"], ["d", "e"], ["", ""], ["f", ""]])
    arrays = data.evaluation_arrays(pairs, 16, max_examples=3)
    # The undecodable image and the captionless pair are skipped; at most 3 are kept.
    assert arrays["image"].shape == (3, 16, 16, 3) and arrays["image"].dtype == np.uint8
    assert arrays["caption"].tolist() == [["a", ""], ["d", "e"], ["f", ""]]
    # A flat colour stays that colour through the antialiased resize.
    np.testing.assert_array_equal(
        arrays["image"][1], np.broadcast_to(flat[0, :16, :16], (16, 16, 3))
    )
    assert "label" not in arrays


def test_arrays_reader_accepts_several_captions_and_grayscale():
    pairs = data.from_arrays(_images(4)[..., 0], [[c, c + " again"] for c in CAPTIONS])
    samples = _drain(pairs)
    assert samples[0]["image"].shape == (40, 48, 3) and samples[0]["caption"].shape == (2,)
    with pytest.raises(ValueError, match="4 images but 3 captions"):
        data.from_arrays(_images(4), CAPTIONS[:3])


def test_arrays_mistakes_are_refused_with_the_fix(tmp_path):
    images = _images(4)
    # Captions that are not strings would be trained on as "None" or "1".
    with pytest.raises(ValueError, match="captions must be strings, got None.*''"):
        data.from_arrays(images, [None, None, "a", "b"])
    with pytest.raises(ValueError, match="got 1 \\(int\\)"):
        data.from_arrays(images, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="different numbers of captions; pad"):
        data.from_arrays(images, [["a", "b"], ["c"], ["d"], ["e"]])
    with pytest.raises(ValueError, match="single string"):
        data.from_arrays(images[:1], "a caption")
    with pytest.raises(ValueError, match="different sizes.*encoded"):
        data.from_arrays([images[0], images[1, :16, :16]], CAPTIONS[:2])
    with pytest.raises(ValueError, match="no images"):
        data.from_arrays(np.zeros((0, 8, 8, 3), np.uint8), [])
    # write_webdataset: a pattern without "{}" would overwrite its own shards.
    with pytest.raises(ValueError, match="no '\\{\\}' for the shard number"):
        data.write_webdataset(str(tmp_path / "one.tar"), images, CAPTIONS, samples_per_shard=2)
    with pytest.raises(ValueError, match="4 images but 2 captions"):
        data.write_webdataset(str(tmp_path / "{}.tar"), images, CAPTIONS[:2])
    with pytest.raises(ValueError, match="samples_per_shard must be a positive integer"):
        data.write_webdataset(str(tmp_path / "{}.tar"), images, CAPTIONS, samples_per_shard=0)
    # Floats in [0, 1] are written as the same picture, not as black JPEGs.
    floats = data.write_webdataset(str(tmp_path / "f{}.tar"), images / np.float32(255), CAPTIONS)
    pixels = data.write_webdataset(str(tmp_path / "u{}.tar"), images, CAPTIONS)
    read = [_drain(data.from_webdataset(files, shuffle_shards=False)) for files in (floats, pixels)]
    for from_floats, from_pixels in zip(*read, strict=True):
        assert from_floats["image"] == from_pixels["image"]  # the same JPEG bytes


def test_fit_from_every_source(tmp_path):
    model = tiny_model()
    model.compile()
    images = _images(8)
    wds = data.write_webdataset(
        str(tmp_path / "wds" / "{}.tar"), images, CAPTIONS * 2, samples_per_shard=4
    )
    record = str(tmp_path / "pairs.tfrecord")
    with tf.io.TFRecordWriter(record) as writer:
        for image, caption in zip(images, CAPTIONS * 2, strict=True):
            writer.write(_example(_jpeg(image), [caption]))
    for i, image in enumerate(images):
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(image))
    (tmp_path / "pairs.csv").write_text(
        "image,caption\n" + "\n".join(f"{i}.jpg,{CAPTIONS[i % 4]}" for i in range(8))
    )
    sources = {
        "webdataset": data.from_webdataset(wds),
        "tfrecord": data.from_tfrecord(record, image_key="jpeg", caption_key="texts"),
        "csv": data.from_csv(str(tmp_path / "pairs.csv")),
        "arrays": data.from_arrays(images, CAPTIONS * 2),
    }
    for name, pairs in sources.items():
        dataset = _pipeline(model, pairs)
        history = model.fit(
            dataset,
            steps_per_epoch=2,
            epochs=1,
            verbose=0,
            # The dataset itself is taken for its stats too.
            callbacks=[data.DataStatsCallback(dataset if name == "arrays" else dataset.stats)],
        ).history
        assert np.isfinite(history["loss"][-1]), name
        assert history["data/undecodable_images"] == [0.0], name
    with pytest.raises(TypeError, match=r"dataset.stats \(a DataStats\), got NoneType"):
        data.DataStatsCallback(None)
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        pairs = data.from_tfds("coco_captions", split="train")
        history = model.fit(_pipeline(model, pairs), steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_a_resumed_stream_continues_where_the_run_stopped():
    model = tiny_model()
    pairs = data.from_arrays(_images(10), (CAPTIONS * 3)[:10])
    whole = [b for b in _pipeline(model, pairs, shuffle_buffer=10).take(5)]
    resumed = [b for b in _pipeline(model, pairs, shuffle_buffer=10, start_example=8).take(3)]
    for a, b in zip(whole[2:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    with pytest.raises(ValueError, match="needs a seed"):
        data.training_dataset(
            pairs, model.preprocessor, 4, tokenizer=hash_tokenizer(), start_example=8
        )
