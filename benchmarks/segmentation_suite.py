"""Throughput of the zero-shot segmentation suite against a plain loop of one window at a time.

A mock ADE20K-150 validation folder (ADEChallengeData2016 layout; images of 512 x 683 px, the
data set's usual size, with random 150-class block labels) is made once in a temporary
directory. Three passes over the same images, with the same class embeddings (TCL's nine
prompts x 150 classes, computed once, untimed), each warmed up first (compilation):

* suite: `run_segmentation`'s loop: TCL's resize (short side 448), 448 px windows every
  224 px, the windows of consecutive images in batches of `--batch-size`, the overlap
  averaging and the resize to the label folded into two einsums on the device
  (`keras_silc.evaluation.sliding_window.slide_inference`);
* suite, 1 window per call: the same with batches of one window;
* plain loop: mmseg's `slide_inference` written directly, image after image, window after
  window: the model on one window, `keras.ops.image.resize` of its scores to the window,
  a numpy canvas and count, the division, `keras.ops.image.resize` to the label size,
  argmax.

All three read with the suite's tf.data pipeline and score with the same confusion matrix,
so the difference is the inference. Rounds interleave the passes (the machine may be shared)
and the table gives medians: images per second of wall time and per CPU-second of this
process (all its threads), and the mIoU, which agrees between passes (up to pixels where two
classes tie within float rounding): the passes compute the same thing. `run_ade20k` itself
runs once on the mock, untimed, as a check.

    KERAS_BACKEND=jax python benchmarks/segmentation_suite.py      # 8 images, 3 rounds
    KERAS_BACKEND=jax python benchmarks/segmentation_suite.py --images 32 --batch-size 32
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import keras
import numpy as np
from PIL import Image

from keras_silc import SilcModel
from keras_silc.evaluation.common import model_fn
from keras_silc.evaluation.segmentation import confusion_matrix
from keras_silc.evaluation.segmentation import dense_scores
from keras_silc.evaluation.segmentation import iou_from_confusion
from keras_silc.evaluation.sliding_window import TCL_CROP_SIZE
from keras_silc.evaluation.sliding_window import TCL_STRIDE
from keras_silc.evaluation.sliding_window import slide_inference
from keras_silc.evaluation.sliding_window import window_boxes
from keras_silc.evaluation.suites import segmentation as suite
from keras_silc.evaluation.suites.segmentation_classes import ADE20K_CLASSES
from keras_silc.evaluation.suites.segmentation_classes import TCL_TEMPLATES
from keras_silc.evaluation.zero_shot import class_embeddings

HEIGHT, WIDTH = 512, 683


def make_ade20k(root, count, seed=0):
    """`count` random 512 x 683 scenes of 150-class blocks, ADEChallengeData2016 layout."""
    rng = np.random.default_rng(seed)
    images = os.path.join(root, "ADEChallengeData2016", "images", "validation")
    labels = os.path.join(root, "ADEChallengeData2016", "annotations", "validation")
    os.makedirs(images)
    os.makedirs(labels)
    for index in range(count):
        grid = rng.integers(0, 151, (8, 11))  # 0 = "other" (not scored), 1..150 classes
        label = grid.repeat(64, 0).repeat(64, 1)[:HEIGHT, :WIDTH].astype(np.uint8)
        colours = rng.integers(0, 256, (151, 3), dtype=np.uint8)
        noise = rng.integers(0, 32, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        image = colours[label] // 2 + noise
        stem = f"ADE_val_{index + 1:08d}"
        Image.fromarray(image).save(os.path.join(images, f"{stem}.jpg"), quality=90)
        Image.fromarray(label).save(os.path.join(labels, f"{stem}.png"))


def suite_pass(model, data_dir, classes, max_examples, batch_size):
    """`run_segmentation`'s loop (reading, batched sliding windows, scoring) with given
    class embeddings; returns (mIoU, images)."""
    num_classes = len(classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    dataset, _, _ = suite.load_dataset("ade20k", data_dir)
    examples = (
        {"image": e["image"], "out_size": e["label"].shape, "label": e["label"]}
        for e in dataset.take(max_examples).as_numpy_iterator()
    )
    count = 0
    for example, prediction in slide_inference(model, examples, classes, batch_size=batch_size):
        confusion += confusion_matrix(example["label"], prediction, num_classes, ignore=255)
        count += 1
    return float(np.nanmean(iou_from_confusion(confusion))), count


def plain_loop(model, data_dir, classes, max_examples):
    """mmseg's slide_inference, one window per model call; returns (mIoU, images)."""
    scores_fn = model_fn(model, "bench/window", lambda m, w, c: dense_scores(m, w, c))
    num_classes = len(classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    dataset, _, _ = suite.load_dataset("ade20k", data_dir)
    count = 0
    for example in dataset.take(max_examples).as_numpy_iterator():
        image = example["image"].astype(np.float32) / 255.0
        label = example["label"]
        height, width = image.shape[:2]
        canvas = np.zeros((height, width, num_classes), np.float32)
        coverage = np.zeros((height, width, 1), np.float32)
        rows, cols = window_boxes(height, width, TCL_CROP_SIZE, TCL_STRIDE)
        for y1, y2 in rows:
            for x1, x2 in cols:
                scores = scores_fn(image[None, y1:y2, x1:x2], classes)
                window = keras.ops.image.resize(scores, (y2 - y1, x2 - x1), "bilinear")
                canvas[y1:y2, x1:x2] += keras.ops.convert_to_numpy(window)[0]
                coverage[y1:y2, x1:x2] += 1
        logits = keras.ops.image.resize(canvas / coverage, label.shape, "bilinear")
        prediction = keras.ops.convert_to_numpy(keras.ops.argmax(logits, axis=-1))
        confusion += confusion_matrix(label, prediction, num_classes, ignore=255)
        count += 1
    return float(np.nanmean(iou_from_confusion(confusion))), count


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="windows per model call")
    parser.add_argument("--patch-size", type=int, default=16, help="of the tiny model")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = SilcModel.from_preset("silc_tiny", vision={"patch_size": args.patch_size})

    def tokenizer(texts):  # words hashed into the tiny model's 256-token vocabulary
        ids = np.zeros((len(texts), 16), np.int32)
        for row, text in enumerate(texts):
            for col, word in enumerate(text.split()[:16]):
                ids[row, col] = 1 + sum(map(ord, word)) % 255
        return ids

    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}"
    )
    if keras.backend.backend() == "jax":
        import jax

        print(f"jax {jax.__version__}, devices {jax.devices()}")
    vision = model.vision_config
    print(
        f"model: silc_tiny, patch {vision['patch_size']}, width {vision['width']}, depth "
        f"{vision['depth']}; a 448 px window is {(448 // vision['patch_size']) ** 2} tokens"
    )
    classes = class_embeddings(model, tokenizer, ADE20K_CLASSES, TCL_TEMPLATES)
    with tempfile.TemporaryDirectory() as data_dir:
        make_ade20k(data_dir, args.images)
        print(
            f"mock ADE20K-150: {args.images} images of {HEIGHT} x {WIDTH} px -> 448 x 598, "
            "2 windows each"
        )

        def run_suite(batch_size, max_examples):
            return suite.run_ade20k(
                model,
                data_dir,
                tokenizer=tokenizer,
                batch_size=batch_size,
                max_examples=max_examples,
                verbose=0,
            )

        passes = {
            f"suite, {args.batch_size} windows per call": lambda n: suite_pass(
                model, data_dir, classes, n, args.batch_size
            ),
            "suite, 1 window per call": lambda n: suite_pass(model, data_dir, classes, n, 1),
            "plain loop, 1 window per call": lambda n: plain_loop(model, data_dir, classes, n),
        }
        for fn in passes.values():
            fn(args.images)  # warm-up: compilation (a batch's shape depends on the count)
        check = suite.run_ade20k(
            model, data_dir, tokenizer=tokenizer, batch_size=args.batch_size, verbose=0
        )
        print(f"run_ade20k on the mock (untimed check): mIoU {check['metrics']['miou']:.4f}")
        results = {title: [] for title in passes}
        for round_ in range(args.rounds):  # interleaved, so that load falls on all alike
            order = list(passes) if round_ % 2 == 0 else list(reversed(passes))
            for title in order:
                (miou, count), wall, cpu = timed(lambda t=title: passes[t](args.images))
                results[title].append((count / wall, count / cpu, miou))
                print(f"  round {round_ + 1}: {title}: {count / wall:.3f} images/s")
    plain = "plain loop, 1 window per call"
    base_wall = statistics.median(r[0] for r in results[plain])
    base_cpu = statistics.median(r[1] for r in results[plain])
    width = max(len(t) for t in results)
    print(f"medians over {args.rounds} rounds of {args.images} images")
    print(f"{'pass':<{width}}  images/s  vs plain  images/CPU-s  vs plain  mIoU")
    for title, rows in results.items():
        speed = statistics.median(r[0] for r in rows)
        per_cpu = statistics.median(r[1] for r in rows)
        print(
            f"{title:<{width}}  {speed:8.3f}  {speed / base_wall:7.2f}x  {per_cpu:12.3f}  "
            f"{per_cpu / base_cpu:7.2f}x  {rows[-1][2]:.4f}"
        )


if __name__ == "__main__":
    main()
