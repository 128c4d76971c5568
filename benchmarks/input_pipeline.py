"""Input-pipeline throughput: keras_silc's tf.data multi-crop against a PIL DINO multi-crop.

Both pipelines read the same JPEG WebDataset shards (made once, in a temporary directory) and
produce the same float32 batches in [0, 1]: the full image resized to S, G global crops at S and
L local crops at s (paper geometry: 256 + 2 x 256 + 8 x 96), plus tokenized text.

* ours: `from_webdataset` -> `training_dataset`, consumed with `.as_numpy_iterator()`.
* PIL: DINO's augmentation (RandomResizedCrop, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) with
  p=0.8 in a random order as torchvision applies it, grayscale p=0.2, Gaussian blur and
  solarize with the same probabilities as `MultiCropConfig`) written with Pillow, reading the
  tar shards with `tarfile`.

Each pipeline and configuration runs in its own subprocess (`--worker`), so that thread
settings apply from the start; it imports and builds once (untimed), then times a fresh
iterator or loader each time the driver asks, and stops it before the next pipeline runs.
Two configurations:

* 1 core: every process pinned to one CPU; ours with TF intra/inter-op threads 1 and tf.data
  `private_threadpool_size = max_intra_op_parallelism = 1`; PIL in one process.
* all cores: ours with tf.data AUTOTUNE defaults; PIL with a `multiprocessing.Pool` of one
  worker per core writing batches into shared memory (as a torch DataLoader would).

Rounds alternate the pipelines (and their order); the table reports medians over rounds,
and ratios are medians of each round's ratio (runs next to each other in time), so that the
noise of a shared machine falls on both alike. "images per CPU-s" divides by the CPU time the
pipeline's processes actually got (all threads and workers), which is what a core delivers
when the machine is shared.

    python benchmarks/input_pipeline.py                  # 512 images, 3 rounds (~3 min)
    python benchmarks/input_pipeline.py --quick          # smoke test (~1 min: 4 processes)
    python benchmarks/input_pipeline.py --photometric accelerator   # photometric on the device
    python benchmarks/input_pipeline.py --photometric host,accelerator   # both, same rounds

With `--photometric accelerator` the host pipeline draws the photometric parameters but leaves
the pixels to the model's step (`MultiCropConfig(photometric="accelerator")`); the benchmark
then also times that stage (`keras_silc.layers.apply_photometric`, on `--stage-backend`) on the
device Keras sees, one core when it is this CPU, and prints what a core would deliver if this
CPU were the accelerator too.
    python benchmarks/input_pipeline.py --torchvision-python /path/to/venv/bin/python
"""

import argparse
import collections
import gc
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

import numpy as np

RESULT_PREFIX = "RESULT "
READY_PREFIX = "READY "
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# MultiCropConfig's defaults (DINO's recipe); the PIL baseline uses the same numbers.
GLOBAL_SCALE = (0.4, 1.0)
LOCAL_SCALE = (0.05, 0.4)
ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
JITTER_PROBABILITY = 0.8
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.4, 0.4, 0.2, 0.1
GRAYSCALE_PROBABILITY = 0.2
GLOBAL_BLUR = (1.0, 0.1)
LOCAL_BLUR = 0.5
BLUR_SIGMA = (0.1, 2.0)
BLUR_REFERENCE_SIZE = 224
SOLARIZE = (0.0, 0.2)

WORDS = (
    "a photo of the red blue green small large round square dog cat car tree house sky "
    "on in left right near far over under two three bright dark old new"
).split()


# ------------------------------------------------------------------------------- data
def shard_files(data_dir):
    return sorted(
        os.path.join(data_dir, name) for name in os.listdir(data_dir) if name.endswith(".tar")
    )


def make_photo(rng, height, width, noise):
    """A photo-like uint8 image: smooth colour field, soft shapes, texture and sensor noise.

    `noise` is a (>= 2 height, >= 2 width, 3) float32 bank of unit Gaussian noise; each image
    takes a random window of it (fresh noise per image costs more than the rest together).
    """
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFilter

    low = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3), np.uint8)
    image = Image.fromarray(low).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x, y = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        w, h = (
            int(rng.integers(width // 10, width // 2)),
            int(rng.integers(height // 10, height // 2)),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        elif kind == 1:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            points = [(int(px), int(py)) for px, py in rng.integers(0, (width, height), (5, 2))]
            draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    pixels = np.asarray(image, np.float32)
    texture = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8)), np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.BILINEAR))
    pixels += (texture[..., None].astype(np.float32) - 128) * np.float32(rng.uniform(0.05, 0.25))
    top, left = (
        int(rng.integers(0, noise.shape[0] - height + 1)),
        int(rng.integers(0, noise.shape[1] - width + 1)),
    )
    pixels += noise[top : top + height, left : left + width] * np.float32(rng.uniform(2.0, 6.0))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_caption(rng):
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(5, 13))))


def worker_make_data(args):
    from keras_silc.data import write_webdataset

    rng = np.random.default_rng(args.seed)
    noise = rng.standard_normal((2 * args.source_height, 2 * args.source_width, 3), np.float32)
    files = []
    for part, start in enumerate(range(0, args.images, args.shard_size)):
        count = min(args.shard_size, args.images - start)
        images = np.stack(
            [make_photo(rng, args.source_height, args.source_width, noise) for _ in range(count)]
        )
        captions = [make_caption(rng) for _ in range(count)]
        pattern = os.path.join(args.data_dir, f"part{part:02d}-{{}}.tar")
        files += write_webdataset(pattern, images, captions, jpeg_quality=90)
    jpeg_bytes = sum(len(jpeg) for jpeg, _ in read_shards(files))
    return {"files": len(files), "mean_jpeg_kb": jpeg_bytes / args.images / 1024}


def read_shards(files):
    """(jpeg bytes, caption) of every sample of the shards, in order, with `tarfile`."""
    for path in files:
        members = {}
        key = None
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name_key, extension = member.name.split(".", 1)
                if key is not None and name_key != key:
                    yield members["jpg"], members["txt"].decode()
                    members = {}
                key = name_key
                members[extension] = archive.extractfile(member).read()
        if key is not None:
            yield members["jpg"], members["txt"].decode()


def sample_stream(files, seed, shuffle_buffer):
    """Endless shuffled (jpeg, caption) stream: shard order reshuffled every epoch."""
    rng = random.Random(seed)
    buffer = []
    while True:
        files = list(files)
        rng.shuffle(files)
        for sample in read_shards(files):
            if len(buffer) < max(1, shuffle_buffer):
                buffer.append(sample)
                continue
            index = rng.randrange(len(buffer))
            yield buffer[index]
            buffer[index] = sample


def tokenize_python(caption, vocabulary_size, length):
    ids = [zlib.crc32(w.encode()) % (vocabulary_size - 1) + 1 for w in caption.lower().split()]
    return (ids + [0] * length)[:length]


# ------------------------------------------------------------------------ PIL baseline
def rrc_box(width, height, scale, ratio, rng):
    """torchvision's RandomResizedCrop.get_params: (top, left, height, width)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def pil_random_resized_crop(image, size, scale, rng):
    from PIL import Image

    top, left, h, w = rrc_box(image.width, image.height, scale, ASPECT_RATIO, rng)
    return image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


def pil_adjust_hue(image, factor):
    """torchvision's F_pil.adjust_hue: shift H of the HSV image (uint8, wrapping)."""
    from PIL import Image

    h, s, v = image.convert("HSV").split()
    hue = np.array(h, dtype=np.uint8)
    hue += np.uint8(int(round(factor * 255)) % 256)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


def pil_color_jitter(image, rng):
    """torchvision's ColorJitter(0.4, 0.4, 0.2, 0.1): the four ops in a random order."""
    from PIL import ImageEnhance

    ops = [0, 1, 2, 3]
    rng.shuffle(ops)
    for op in ops:
        if op == 0:
            image = ImageEnhance.Brightness(image).enhance(
                rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS)
            )
        elif op == 1:
            image = ImageEnhance.Contrast(image).enhance(rng.uniform(1 - CONTRAST, 1 + CONTRAST))
        elif op == 2:
            image = ImageEnhance.Color(image).enhance(rng.uniform(1 - SATURATION, 1 + SATURATION))
        else:
            image = pil_adjust_hue(image, rng.uniform(-HUE, HUE))
    return image


def pil_photometric(image, rng, blur_probability, solarize_probability, size):
    from PIL import ImageFilter
    from PIL import ImageOps

    if rng.random() < JITTER_PROBABILITY:
        image = pil_color_jitter(image, rng)
    if rng.random() < GRAYSCALE_PROBABILITY:
        image = image.convert("L").convert("RGB")
    if rng.random() < blur_probability:
        # Same sigma range as MultiCropConfig (DINO's at 224 px, scaled with the crop).
        sigma = rng.uniform(*BLUR_SIGMA) * size / BLUR_REFERENCE_SIZE
        image = image.filter(ImageFilter.GaussianBlur(sigma))
    if rng.random() < solarize_probability:
        image = ImageOps.solarize(image, 128)
    return image


def to_float(image, out):
    np.multiply(np.asarray(image), np.float32(1.0 / 255.0), out=out)


def pil_views_into(jpeg, rng, geometry, full_out, global_out, local_out):
    """Decodes one JPEG and writes its views into the given float32 arrays."""
    from PIL import Image

    size, local_size = geometry["image_size"], geometry["local_size"]
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    flip = rng.random() < 0.5  # one coin for the captioned views, as "captioned_swap"
    full = image.resize((size, size), Image.BILINEAR)
    if flip:
        full = full.transpose(Image.FLIP_LEFT_RIGHT)
    to_float(full, full_out)
    for index in range(geometry["global_crops"]):
        crop = pil_random_resized_crop(image, size, GLOBAL_SCALE, rng)
        if flip:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop = pil_photometric(crop, rng, GLOBAL_BLUR[index % 2], SOLARIZE[index % 2], size)
        to_float(crop, global_out[index])
    for index in range(geometry["local_crops"]):
        crop = pil_random_resized_crop(image, local_size, LOCAL_SCALE, rng)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop = pil_photometric(crop, rng, LOCAL_BLUR, 0.0, local_size)
        to_float(crop, local_out[index])


def batch_shapes(geometry, batch_size):
    size, local_size = geometry["image_size"], geometry["local_size"]
    return {
        "image": (batch_size, size, size, 3),
        "global_crops": (batch_size, geometry["global_crops"], size, size, 3),
        "local_crops": (batch_size, geometry["local_crops"], local_size, local_size, 3),
    }


def pil_fill_batch(arrays, samples, seed, geometry):
    rng = random.Random(seed)
    text = []
    for index, (jpeg, caption) in enumerate(samples):
        pil_views_into(
            jpeg,
            rng,
            geometry,
            arrays["image"][index],
            arrays["global_crops"][index],
            arrays["local_crops"][index],
        )
        text.append(tokenize_python(caption, geometry["vocabulary_size"], geometry["text_length"]))
    return np.asarray(text, np.int32)


class PilSerial:
    """The PIL pipeline in this process: fresh batch arrays, as a collate function makes."""

    def __init__(self, files, geometry, batch_size, seed, shuffle_buffer):
        self.samples = sample_stream(files, seed, shuffle_buffer)
        self.geometry, self.batch_size, self.seed = geometry, batch_size, seed
        self.count = 0

    def __next__(self):
        arrays = {
            key: np.empty(shape, np.float32)
            for key, shape in batch_shapes(self.geometry, self.batch_size).items()
        }
        samples = [next(self.samples) for _ in range(self.batch_size)]
        self.count += 1
        arrays["text"] = pil_fill_batch(
            arrays, samples, self.seed * 1_000_003 + self.count, self.geometry
        )
        return arrays

    def close(self):
        pass

    def worker_pids(self):
        return []


_POOL_STATE = {}


def _pool_init(shm_name, geometry, batch_size, slots):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    _POOL_STATE.update(
        shm=shm, geometry=geometry, views=slot_views(shm, geometry, batch_size, slots)
    )


def _pool_batch(slot, samples, seed):
    arrays = _POOL_STATE["views"][slot]
    return slot, pil_fill_batch(arrays, samples, seed, _POOL_STATE["geometry"])


def slot_views(shm, geometry, batch_size, slots):
    shapes = batch_shapes(geometry, batch_size)
    views, offset = [], 0
    for _ in range(slots):
        slot = {}
        for key, shape in shapes.items():
            slot[key] = np.ndarray(shape, np.float32, buffer=shm.buf, offset=offset)
            offset += int(np.prod(shape)) * 4
        views.append(slot)
    return views


class PilPool:
    """PIL workers (one per core) write batches into shared memory; 2 batches in flight each.

    The parent reads the tar shards and hands each worker a batch of encoded samples, as a
    torch DataLoader over a WebDataset would (minus the tensor conversion).
    """

    def __init__(self, files, geometry, batch_size, seed, shuffle_buffer, workers):
        import multiprocessing
        from multiprocessing import shared_memory

        self.samples = sample_stream(files, seed, shuffle_buffer)
        self.batch_size, self.seed = batch_size, seed
        self.slots = 2 * workers
        per_batch = sum(int(np.prod(s)) * 4 for s in batch_shapes(geometry, batch_size).values())
        self.shm = shared_memory.SharedMemory(create=True, size=per_batch * self.slots)
        self.views = slot_views(self.shm, geometry, batch_size, self.slots)
        context = multiprocessing.get_context("fork")
        self.pool = context.Pool(
            workers, _pool_init, (self.shm.name, geometry, batch_size, self.slots)
        )
        self.pending = collections.deque()
        self.count = 0
        self.released = None
        for slot in range(self.slots):
            self._submit(slot)

    def _submit(self, slot):
        samples = [next(self.samples) for _ in range(self.batch_size)]
        self.count += 1
        seed = self.seed * 1_000_003 + self.count
        self.pending.append(self.pool.apply_async(_pool_batch, (slot, samples, seed)))

    def __next__(self):
        if self.released is not None:  # the previous batch's slot is free again
            self._submit(self.released)
        slot, text = self.pending.popleft().get()
        self.released = slot
        return dict(self.views[slot], text=text)

    def worker_pids(self):
        return [process.pid for process in self.pool._pool]

    def close(self):
        self.pool.terminate()
        self.pool.join()
        self.views = None
        self.shm.close()
        self.shm.unlink()


def setup_pil(args, geometry):
    """A function that times the PIL pipeline once, from a fresh loader (closed after)."""
    files = shard_files(args.data_dir)

    def measure_once():
        if args.cores == 1:
            loader = PilSerial(files, geometry, args.batch_size, args.seed, args.shuffle_buffer)
        else:
            loader = PilPool(
                files, geometry, args.batch_size, args.seed, args.shuffle_buffer, args.cores
            )
        try:
            return measure(loader, args, loader.worker_pids())
        finally:
            loader.close()  # nothing keeps running while the other pipeline is timed

    return measure_once


# ------------------------------------------------------------------------------ ours
def preprocessor_for(geometry):
    """The `SilcPreprocessor` of the benchmark's view geometry and text tower (no model
    here, so any common divisor of the two sizes serves as the patch size)."""
    import math

    from keras_silc import SilcPreprocessor

    return SilcPreprocessor(
        image_size=geometry["image_size"],
        patch_size=math.gcd(geometry["image_size"], geometry["local_size"]),
        num_global_crops=geometry["global_crops"],
        local_crop_size=geometry["local_size"],
        num_local_crops=geometry["local_crops"],
        vocabulary_size=geometry["vocabulary_size"],
        max_length=geometry["text_length"],
    )


def hashing_tokenizer(vocabulary_size, length):
    import tensorflow as tf

    def tokenize(captions):
        words = tf.strings.split(tf.strings.lower(captions))
        ids = tf.strings.to_hash_bucket_fast(words, vocabulary_size - 1) + 1
        return ids.to_tensor(shape=[None, length])

    return tokenize


def setup_ours_dataset(args, geometry):
    """Our tf.data pipeline on the shards, threads limited with `--cores 1`."""
    import tensorflow as tf

    if args.cores == 1:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras_silc.data import from_webdataset
    from keras_silc.data import training_dataset

    pairs = from_webdataset(shard_files(args.data_dir), shuffle_shards=True, seed=args.seed)
    dataset = training_dataset(
        pairs,
        preprocessor_for(geometry),
        args.batch_size,
        tokenizer=hashing_tokenizer(geometry["vocabulary_size"], geometry["text_length"]),
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
        augmentation={"photometric": args.photometric},
    )
    if args.cores == 1:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        dataset = dataset.with_options(options)
    return dataset


def setup_ours(args, geometry):
    """Builds the tf.data pipeline once; returns a function that times a fresh iterator."""
    dataset = setup_ours_dataset(args, geometry)

    def measure_once():
        iterator = dataset.as_numpy_iterator()
        try:
            return measure(iterator, args, [])
        finally:
            # Deleting the iterator cancels its prefetching threads before the other
            # pipeline is timed.
            del iterator
            gc.collect()

    return measure_once


def setup_accelerator_stage(args, geometry):
    """Times the model-side half of `--photometric accelerator` on a real batch of ours."""
    import keras

    from keras_silc.layers import apply_photometric

    batch = next(setup_ours_dataset(args, geometry).as_numpy_iterator())
    sets = [
        tuple(batch[f"{name}_{key}"] for key in ("crops", "crop_color", "crop_blur"))
        for name in ("global", "local")
        if f"{name}_crop_color" in batch
    ]
    if keras.backend.backend() == "jax":
        import jax

        stage = jax.jit(lambda sets: [apply_photometric(*inputs) for inputs in sets])
        sets = jax.device_put(sets)

        def run():
            jax.block_until_ready(stage(sets))
    else:
        sets = [tuple(keras.ops.convert_to_tensor(x) for x in inputs) for inputs in sets]

        def run():
            keras.ops.convert_to_numpy(sum(keras.ops.sum(apply_photometric(*x)) for x in sets))

    def measure_once():
        run()  # compile / warm up
        cpu0, t0, calls = cpu_seconds([]), time.perf_counter(), 0
        while time.perf_counter() - t0 < args.seconds or calls < 3:
            run()
            calls += 1
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds([]) - cpu0
        return {
            **rates(calls * args.batch_size, elapsed, cpu),
            "device": str(keras.backend.backend()) + " " + _device_name(),
        }

    return measure_once


def _device_name():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return "default device"


# ------------------------------------------------------------------------- timing
def cpu_seconds(pids):
    """User + system CPU seconds of this process (all threads) and of `pids`."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rates(images, seconds, cpu):
    """A measurement's counts and rates, per wall second and per CPU second."""
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "cpu_seconds": cpu,
        "images_per_cpu_s": images / cpu if cpu > 0 else float("nan"),
    }


def measure(iterator, args, pids):
    """Discards the first batch and `--warmup` s of batches, then times `--seconds` s."""
    start = time.perf_counter()
    batch = next(iterator)
    first_batch = time.perf_counter() - start
    warm = time.perf_counter()
    while time.perf_counter() - warm < args.warmup:
        batch = next(iterator)
    check = {key: list(np.shape(value)) for key, value in batch.items()}
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    batches = 0
    while True:
        batch = next(iterator)
        batches += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= args.seconds and batches >= 2:
            break
    cpu = cpu_seconds(pids) - cpu0
    return {
        **rates(batches * args.batch_size, elapsed, cpu),
        "first_batch_s": first_batch,
        "shapes": check,
        "range": [float(np.min(batch["image"])), float(np.max(batch["image"]))],
    }


# ------------------------------------------------------------------ torchvision baseline
def setup_torchvision(args, geometry):
    """DINO's DataAugmentationDINO with torchvision transforms (optional, other Python)."""
    import torch
    from PIL import Image
    from PIL import ImageFilter
    from PIL import ImageOps
    from torchvision import transforms

    if args.cores == 1:
        torch.set_num_threads(1)
    size, local_size = geometry["image_size"], geometry["local_size"]

    class Blur:
        def __init__(self, p, crop):
            self.p, self.crop = p, crop

        def __call__(self, image):
            if random.random() >= self.p:
                return image
            sigma = random.uniform(*BLUR_SIGMA) * self.crop / BLUR_REFERENCE_SIZE
            return image.filter(ImageFilter.GaussianBlur(sigma))

    class Solarize:
        def __init__(self, p):
            self.p = p

        def __call__(self, image):
            return ImageOps.solarize(image) if random.random() < self.p else image

    jitter = transforms.Compose(
        [
            transforms.RandomApply(
                [transforms.ColorJitter(BRIGHTNESS, CONTRAST, SATURATION, HUE)],
                p=JITTER_PROBABILITY,
            ),
            transforms.RandomGrayscale(p=GRAYSCALE_PROBABILITY),
        ]
    )
    to_tensor = transforms.ToTensor()
    flip = transforms.RandomHorizontalFlip()
    full = transforms.Compose([transforms.Resize((size, size)), flip, to_tensor])
    global_views = [
        transforms.Compose(
            [
                transforms.RandomResizedCrop(size, GLOBAL_SCALE, ASPECT_RATIO),
                flip,
                jitter,
                Blur(GLOBAL_BLUR[i % 2], size),
                Solarize(SOLARIZE[i % 2]),
                to_tensor,
            ]
        )
        for i in range(geometry["global_crops"])
    ]
    local_view = transforms.Compose(
        [
            transforms.RandomResizedCrop(local_size, LOCAL_SCALE, ASPECT_RATIO),
            flip,
            jitter,
            Blur(LOCAL_BLUR, local_size),
            to_tensor,
        ]
    )

    files = shard_files(args.data_dir)

    class Shards(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = files if info is None else files[info.id :: info.num_workers] or files
            seed = args.seed + (0 if info is None else info.id)
            random.seed(seed)
            for jpeg, caption in sample_stream(mine, seed, args.shuffle_buffer):
                image = Image.open(io.BytesIO(jpeg)).convert("RGB")
                yield {
                    "image": full(image),
                    "global_crops": torch.stack([view(image) for view in global_views]),
                    "local_crops": torch.stack(
                        [local_view(image) for _ in range(geometry["local_crops"])]
                    ),
                    "text": torch.tensor(
                        tokenize_python(
                            caption, geometry["vocabulary_size"], geometry["text_length"]
                        )
                    ),
                }

    workers = 0 if args.cores == 1 else args.cores
    loader = torch.utils.data.DataLoader(
        Shards(),
        batch_size=args.batch_size,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )

    class Numpy:
        """DataLoader batches as numpy arrays (a view of the tensors: no copy)."""

        def __init__(self):
            self.batches = iter(loader)

        def __next__(self):
            return {key: value.numpy() for key, value in next(self.batches).items()}

    def measure_once():
        import multiprocessing

        batches = Numpy()
        try:
            next(batches)  # starts the workers
            pids = [child.pid for child in multiprocessing.active_children()]
            return measure(batches, args, pids)
        finally:
            del batches  # shuts the workers down
            gc.collect()

    return measure_once


# ------------------------------------------------------------------------ driver
def geometry_of(args):
    return {
        "image_size": args.image_size,
        "local_size": args.local_size,
        "global_crops": args.global_crops,
        "local_crops": args.local_crops,
        "vocabulary_size": 32000,
        "text_length": 64,
    }


def worker_main(args):
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    if REPO_ROOT not in sys.path:  # after PYTHONPATH: a patched copy of keras_silc there wins
        sys.path.append(REPO_ROOT)
    if args.worker == "make-data":
        print(RESULT_PREFIX + json.dumps(worker_make_data(args)), flush=True)
        return
    setup = {
        "ours": setup_ours,
        "pil": setup_pil,
        "torchvision": setup_torchvision,
        "accelerator-stage": setup_accelerator_stage,
    }
    started = time.perf_counter()
    measure_once = setup[args.worker](args, geometry_of(args))
    print(f"{READY_PREFIX}{time.perf_counter() - started:.1f}", flush=True)
    # One measurement per "measure" line on stdin, so that a worker imports and builds once
    # and the driver can alternate pipelines without restarting them.
    for line in sys.stdin:
        if line.strip() != "measure":
            break
        print(RESULT_PREFIX + json.dumps(measure_once()), flush=True)


def worker_command(python, kind, args, cores=None, pin_cpu=None, variant=None):
    """The command line of a `--worker` subprocess; `variant` gives an "ours" worker its own
    `--photometric`."""
    command = [python, os.path.abspath(__file__), "--worker", kind]
    args = argparse.Namespace(**{**vars(args), **(variant or {})})
    for flag in (
        "images",
        "batch_size",
        "image_size",
        "local_size",
        "global_crops",
        "local_crops",
        "source_height",
        "source_width",
        "shard_size",
        "seed",
        "seconds",
        "warmup",
        "shuffle_buffer",
        "photometric",
    ):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    command += ["--data-dir", args.data_dir]
    if cores is not None:
        command += ["--cores", str(cores)]
    if pin_cpu is not None:
        command += ["--pin-cpu", str(pin_cpu)]
    env = dict(os.environ)
    if kind == "accelerator-stage":
        env["KERAS_BACKEND"] = args.stage_backend
    else:
        env.setdefault(
            "KERAS_BACKEND", "tensorflow"
        )  # the pipeline is tf.data whatever the backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cores == 1:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            env[name] = "1"
    return command, env


class Worker:
    """A `--worker` subprocess that sets up once, then measures on request."""

    def __init__(self, python, kind, args, cores=None, pin_cpu=None, variant=None):
        self.name = f"{kind} (cores={cores})"
        command, env = worker_command(python, kind, args, cores, pin_cpu, variant)
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )

    def _read(self, prefix):
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :]
        self.log.seek(0)
        sys.stderr.write(self.log.read()[-3000:])
        raise RuntimeError(f"worker {self.name} failed (exit code {self.process.wait()})")

    def ready(self):
        return float(self._read(READY_PREFIX))

    def measure(self):
        self.process.stdin.write("measure\n")
        self.process.stdin.flush()
        return json.loads(self._read(RESULT_PREFIX))

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def make_data(args):
    command, env = worker_command(sys.executable, "make-data", args)
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    for line in process.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    sys.stderr.write(process.stdout[-3000:] + process.stderr[-3000:])
    raise RuntimeError(f"making the shards failed (exit code {process.returncode})")


PHOTOMETRIC = ("host", "accelerator")


def ours_variants(args):
    """[(name, {"photometric": value})]: one "ours" pipeline per `--photometric` value,
    timed in the same rounds against the same baseline."""
    values = args.photometric.split(",")
    return [
        (f"ours {value}" if len(values) > 1 else "ours", {"photometric": value}) for value in values
    ]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--global-crops", type=int, default=2)
    parser.add_argument("--local-crops", type=int, default=8)
    parser.add_argument("--source-height", type=int, default=384)
    parser.add_argument("--source-width", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=128, help="samples per tar shard")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per run")
    parser.add_argument("--shuffle-buffer", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--photometric",
        default="host",
        help="ours: MultiCropConfig.photometric, or several comma-separated (each its own "
        "pipeline in the same rounds): host, accelerator (the host draws the parameters, "
        "the model's step applies them)",
    )
    parser.add_argument(
        "--stage-backend",
        default="jax",
        choices=("jax", "torch", "tensorflow"),
        help="Keras backend that times the accelerator stage",
    )
    parser.add_argument(
        "--data-dir", help="shards directory (reused if it has shards; default: a temp dir)"
    )
    parser.add_argument(
        "--configs", default="1,all", help="comma-separated: 1 (one core) and/or all"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin 1-core runs to a CPU")
    parser.add_argument(
        "--torchvision-python", help="also time DINO's torchvision transforms with this Python"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test")
    parser.add_argument(
        "--worker", choices=("make-data", "ours", "pil", "torchvision", "accelerator-stage")
    )
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--pin-cpu", type=int)
    args = parser.parse_args(argv)
    if not set(args.photometric.split(",")) <= set(PHOTOMETRIC):
        parser.error(f"--photometric takes values among {PHOTOMETRIC}: {args.photometric!r}")
    if args.quick and args.worker is None:
        args.images, args.batch_size, args.rounds = 32, 8, 1
        args.image_size, args.local_size = 64, 32
        args.source_height, args.source_width, args.shard_size = 96, 128, 16
        args.seconds, args.warmup = 1.0, 0.3
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    started, load = time.perf_counter(), os.getloadavg()
    cpus = sorted(os.sched_getaffinity(0))
    all_cores = len(cpus)
    temporary = args.data_dir is None
    args.data_dir = args.data_dir or tempfile.mkdtemp(prefix="silc-input-bench-")
    workers = {}
    try:
        os.makedirs(args.data_dir, exist_ok=True)
        if not shard_files(args.data_dir):
            data = make_data(args)
            print(
                f"wrote {args.images} images of {args.source_height}x{args.source_width} in "
                f"{data['files']} shards, mean JPEG {data['mean_jpeg_kb']:.1f} KB "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        configs = []
        for name in args.configs.split(","):
            if name.strip() == "1":
                configs.append(("1 core", 1, None if args.no_pin else cpus[0]))
            elif name.strip() == "all":
                configs.append((f"all ({all_cores} cores)", all_cores, None))
        variants = ours_variants(args)
        pipelines = [(name, sys.executable, variant) for name, variant in variants]
        pipelines.append(("pil", sys.executable, None))
        if args.torchvision_python:
            pipelines.append(("torchvision", args.torchvision_python, None))
        # All workers import and build at once (not timed), then take turns.
        for label, cores, pin in configs:
            for name, python, variant in pipelines:
                kind = "ours" if variant is not None else name
                workers[label, name] = Worker(python, kind, args, cores, pin, variant)
        if "accelerator" in args.photometric.split(","):
            pin = None if args.no_pin else cpus[0]
            workers["stage", "accelerator-stage"] = Worker(
                sys.executable,
                "accelerator-stage",
                args,
                cores=1,
                pin_cpu=pin,
                variant={"photometric": "accelerator"},
            )
        setup = {key: worker.ready() for key, worker in workers.items()}
        print(
            "set up: "
            + ", ".join(
                f"{kind} {label} {seconds:.0f} s" for (label, kind), seconds in setup.items()
            )
            + f" (in parallel; {time.perf_counter() - started:.0f} s so far)",
            flush=True,
        )
        results = collections.defaultdict(list)
        for round_index in range(args.rounds):
            order = pipelines if round_index % 2 == 0 else pipelines[::-1]
            for label, _, _ in configs:
                for kind, _, _ in order:
                    result = workers[label, kind].measure()
                    results[label, kind].append(result)
                    print(
                        f"round {round_index + 1} {label:>16} {kind:>11}: "
                        f"{result['images_per_s']:7.1f} images/s, "
                        f"{result['images_per_cpu_s']:7.1f} images/CPU-s "
                        f"({result['images']} images in {result['seconds']:.1f} s)",
                        flush=True,
                    )
        stage = None
        if "accelerator" in args.photometric.split(","):
            stage = [workers["stage", "accelerator-stage"].measure() for _ in range(args.rounds)]
        names = [name for name, _, _ in pipelines]
        if stage:  # the host half that the stage completes
            stage = (stage, next(n for n, v in variants if v["photometric"] == "accelerator"))
        print_table(args, configs, names, results, time.perf_counter() - started, load, stage)
    finally:
        for worker in workers.values():
            worker.close()
        if temporary:
            shutil.rmtree(args.data_dir, ignore_errors=True)


def print_table(args, configs, pipelines, results, elapsed, load, stage=None):
    """The medians of each pipeline, and each one's paired ratio to the PIL baseline (and,
    with several "ours" pipelines, to the first of them) measured in the same rounds."""

    def median(label, kind, key):
        return statistics.median(r[key] for r in results[label, kind])

    def paired_ratio(label, kind, baseline, key):
        pairs = zip(results[label, kind], results[label, baseline], strict=True)
        return statistics.median(mine[key] / other[key] for mine, other in pairs)

    ours = [kind for kind in pipelines if kind.startswith("ours")]
    print()
    print(
        f"Geometry: full {args.image_size} + {args.global_crops} x {args.image_size} + "
        f"{args.local_crops} x {args.local_size}, batch {args.batch_size}, source "
        f"{args.source_height}x{args.source_width} JPEG q90, {args.images} images; median of "
        f"{args.rounds} interleaved round(s), {args.seconds:g} s timed each; load average "
        f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs; "
        f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')}; ours with "
        f"photometric={args.photometric!r}."
    )
    print()
    print(
        "| config | pipeline | images/s | images/s per core | images per CPU-s "
        "| this / PIL (images/s) | this / PIL (per CPU-s) |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios = collections.defaultdict(dict)
    for label, cores, _ in configs:
        for kind in pipelines:
            rate = median(label, kind, "images_per_s")
            cpu_rate = median(label, kind, "images_per_cpu_s")
            ratio = paired_ratio(label, kind, "pil", "images_per_s")
            cpu_ratio = paired_ratio(label, kind, "pil", "images_per_cpu_s")
            ratios[kind][label] = ratio, cpu_ratio
            baseline = kind == "pil"
            print(
                f"| {label} | {kind} | {rate:.1f} | {rate / cores:.1f} | {cpu_rate:.1f} | "
                f"{'-' if baseline else f'{ratio:.2f}x'} | "
                f"{'-' if baseline else f'{cpu_ratio:.2f}x'} |"
            )
    print()
    for kind in ours:
        met = min(ratio for ratio, _ in ratios[kind].values()) >= 2.0
        detail = ", ".join(
            f"{label}: {ratio:.2f}x ({cpu_ratio:.2f}x per CPU-s)"
            for label, (ratio, cpu_ratio) in ratios[kind].items()
        )
        print(f"{kind} / PIL, target >= 2.0x per core: {'met' if met else 'not met'} ({detail})")
    for kind in ours[1:]:
        detail = ", ".join(
            f"{label}: {paired_ratio(label, kind, ours[0], 'images_per_s'):.2f}x "
            f"({paired_ratio(label, kind, ours[0], 'images_per_cpu_s'):.2f}x per CPU-s)"
            for label, _, _ in configs
        )
        print(f"{kind} / {ours[0]} (paired, same rounds): {detail}")
    if stage:
        stage, host_half = stage
        rate = statistics.median(r["images_per_s"] for r in stage)
        cpu_rate = statistics.median(r["images_per_cpu_s"] for r in stage)
        print(
            f"accelerator stage (apply_photometric on {stage[0]['device']}, one core if a CPU): "
            f"{rate:.1f} images/s, {cpu_rate:.1f} images per CPU-s "
            f"({1000 / cpu_rate:.2f} CPU-ms per image)."
        )
        if "1 core" in ratios[host_half]:
            # One core doing both halves, and what PIL's core does in the same rounds.
            both = [
                1 / (1 / median("1 core", host_half, key) + 1 / stage_rate)
                for key, stage_rate in (("images_per_s", rate), ("images_per_cpu_s", cpu_rate))
            ]
            pil = [median("1 core", "pil", key) for key in ("images_per_s", "images_per_cpu_s")]
            print(
                f"if this CPU core also ran that stage: {both[0]:.1f} images/s, "
                f"{both[0] / pil[0]:.2f}x PIL ({both[1] / pil[1]:.2f}x per CPU-s): what a "
                "CPU-only run gets; on a GPU/TPU the stage's cost falls on the accelerator."
            )
    print(f"total {elapsed:.0f} s")


if __name__ == "__main__":
    main()
