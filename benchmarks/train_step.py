"""Training-step throughput per backend: CLIP mode against SILC mode, in one run.

For each backend (each in its own process, since KERAS_BACKEND is per process) it
prints images/s of a CLIP-mode step and a SILC-mode step, the model FLOPs of each step,
the achieved FLOP rate as a fraction of a dense float32 matmul measured in the same
process, and SILC's cost ratio against its FLOP ratio. With `--open-clip-python` it
also runs open_clip's CLIP step at the same geometry (see benchmarks/README.md).

    python benchmarks/train_step.py                       # all three backends
    python benchmarks/train_step.py --backends jax --steps 5
    python benchmarks/train_step.py --open-clip-python /path/to/venv/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import time

GEOMETRY = {
    "image_size": 64,
    "patch_size": 8,
    "width": 256,
    "depth": 6,
    "heads": 4,
    "text_width": 256,
    "text_depth": 6,
    "text_heads": 4,
    "context_length": 32,
    "vocab_size": 1024,
    "num_prototypes": 4096,
    "head_hidden": 1024,
    "bottleneck": 128,
    "global_crops": 2,
    "local_crops": 6,
    "local_size": 32,
    "batch_size": 32,
}


def model_overrides(g):
    return {
        "vision": {
            "image_size": g["image_size"],
            "patch_size": g["patch_size"],
            "width": g["width"],
            "depth": g["depth"],
            "num_heads": g["heads"],
            "mlp_dim": 4 * g["width"],
        },
        "text": {
            "vocabulary_size": g["vocab_size"],
            "max_length": g["context_length"],
            "width": g["text_width"],
            "depth": g["text_depth"],
            "num_heads": g["text_heads"],
            "mlp_dim": 4 * g["text_width"],
            "output_dim": g["width"],
        },
        "head": {
            "num_prototypes": g["num_prototypes"],
            "hidden_dim": g["head_hidden"],
            "bottleneck_dim": g["bottleneck"],
        },
        "num_global_crops": g["global_crops"],
        "num_local_crops": g["local_crops"],
        "local_crop_size": g["local_size"],
    }


# ------------------------------------------------------------------ FLOP count
def transformer_flops(tokens, width, depth, mlp):
    """Forward FLOPs (2 per multiply-add) of `depth` pre-norm blocks on one sequence."""
    per_block = 8 * tokens * width**2 + 4 * tokens**2 * width + 4 * tokens * width * mlp
    return depth * per_block


def vit_flops(g, image_size):
    d, p = g["width"], g["patch_size"]
    n = (image_size // p) ** 2
    patch = 2 * n * p * p * 3 * d
    map_head = 4 * d * d + 4 * n * d * d + 4 * n * d + 8 * d * d
    return patch + transformer_flops(n, d, g["depth"], 4 * d) + map_head


def text_flops(g):
    d = g["text_width"]
    blocks = transformer_flops(g["context_length"], d, g["text_depth"], 4 * d)
    return blocks + 2 * d * g["width"]


def head_flops(g):
    j, h, b, k = g["width"], g["head_hidden"], g["bottleneck"], g["num_prototypes"]
    return 2 * (j * h + h * h + h * b + b * k)


def step_flops(g, mode):
    """Model FLOPs of one training step; backward counted as twice the forward."""
    b, s = g["batch_size"], g["image_size"]
    contrastive = 2 * b * b * g["width"]
    if mode == "clip":
        return 3 * (b * vit_flops(g, s) + b * text_flops(g) + contrastive)
    views = 1 + g["global_crops"]
    student = (
        b * views * vit_flops(g, s)
        + b * g["local_crops"] * (vit_flops(g, g["local_size"]) + head_flops(g))
        + b * text_flops(g)
        + views * contrastive
    )
    teacher = b * g["global_crops"] * (vit_flops(g, s) + head_flops(g))
    return 3 * student + teacher


# ---------------------------------------------------------------------- worker
def matmul_ceiling(backend, n=1024, repeats=20):
    """FLOP/s of an n x n float32 matmul on this backend, best of `repeats`."""
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    if backend == "jax":
        import jax

        x = jax.device_put(a)
        f = jax.jit(lambda m: m @ m)
        f(x).block_until_ready()

        def run():
            f(x).block_until_ready()
    elif backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(a)

        def run():
            tf.linalg.matmul(x, x).numpy()
    else:
        import torch

        x = torch.from_numpy(a)

        def run():
            torch.mm(x, x)

    run()
    best = min(_timed(run) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_mode(g, mode, steps, warmup):
    import keras

    from keras_silc import SilcModel
    from keras_silc.experiments import TABLE6_ROWS

    keras.utils.set_random_seed(0)
    switches = TABLE6_ROWS["clip"] if mode == "clip" else {}
    model = SilcModel.from_config({**model_overrides(g), **switches})
    model.compile(warmup_steps=0)
    batch = model.preprocessor.example_batch(g["batch_size"], seed=0)
    batch = {k: v for k, v in batch.items() if k in model.required_keys()}
    start = time.perf_counter()
    model.train_on_batch(batch)  # compiles
    compile_seconds = time.perf_counter() - start
    for _ in range(warmup):
        model.train_on_batch(batch)
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_on_batch(batch, return_dict=True)  # returns floats: waits for the step
    seconds = (time.perf_counter() - start) / steps
    assert all(map(lambda v: v == v, logs.values())), logs
    return {"seconds_per_step": seconds, "compile_seconds": compile_seconds}


def worker(args):
    import keras

    backend = keras.backend.backend()
    g = json.loads(args.geometry)
    result = {"backend": backend, "keras": keras.__version__}
    result["matmul_flops_per_s"] = matmul_ceiling(backend)
    for mode in ("clip", "silc"):
        timing = time_mode(g, mode, args.steps, args.warmup)
        flops = step_flops(g, mode)
        result[mode] = {
            **timing,
            "images_per_s": g["batch_size"] / timing["seconds_per_step"],
            "flops_per_step": flops,
            "fraction_of_matmul": flops / timing["seconds_per_step"] / result["matmul_flops_per_s"],
        }
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------- driver
def run_backend(backend, args, geometry):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--worker", "--geometry", json.dumps(geometry)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{backend} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def run_open_clip(python, args, g):
    command = [python, os.path.join(os.path.dirname(__file__), "open_clip_step.py")]
    flags = {
        "image-size": g["image_size"],
        "patch-size": g["patch_size"],
        "width": g["width"],
        "depth": g["depth"],
        "heads": g["heads"],
        "text-width": g["text_width"],
        "text-depth": g["text_depth"],
        "text-heads": g["text_heads"],
        "context-length": g["context_length"],
        "vocab-size": g["vocab_size"],
        "embed-dim": g["width"],
        "batch-size": g["batch_size"],
        "steps": args.steps,
        "warmup": args.warmup,
    }
    for key, value in flags.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"open_clip run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=GEOMETRY["batch_size"])
    parser.add_argument("--open-clip-python", help="Python of an environment with open-clip-torch.")
    parser.add_argument("--json", help="Also write the results to this file.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--geometry", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    geometry = {**GEOMETRY, "batch_size": args.batch_size}
    print("geometry:", json.dumps(geometry))
    print(
        f"FLOPs per step: CLIP {step_flops(geometry, 'clip') / 1e9:.1f} G, "
        f"SILC {step_flops(geometry, 'silc') / 1e9:.1f} G, "
        f"ratio {step_flops(geometry, 'silc') / step_flops(geometry, 'clip'):.2f}"
    )
    results = {}
    for backend in args.backends.split(","):
        results[backend] = run_backend(backend, args, geometry)
    header = (
        f"{'backend':<11}{'matmul GF/s':>12}{'CLIP img/s':>12}{'CLIP MFU':>10}"
        f"{'SILC img/s':>12}{'SILC MFU':>10}{'time ratio':>12}{'FLOP ratio':>12}{'cost/FLOP':>11}"
    )
    print(header)
    for backend, r in results.items():
        time_ratio = r["silc"]["seconds_per_step"] / r["clip"]["seconds_per_step"]
        flop_ratio = r["silc"]["flops_per_step"] / r["clip"]["flops_per_step"]
        r["silc_time_ratio"], r["silc_flop_ratio"] = time_ratio, flop_ratio
        print(
            f"{backend:<11}{r['matmul_flops_per_s'] / 1e9:>12.1f}{r['clip']['images_per_s']:>12.1f}"
            f"{r['clip']['fraction_of_matmul']:>10.2f}{r['silc']['images_per_s']:>12.1f}"
            f"{r['silc']['fraction_of_matmul']:>10.2f}{time_ratio:>12.2f}{flop_ratio:>12.2f}"
            f"{time_ratio / flop_ratio:>11.2f}"
        )
    best = max(results, key=lambda b: results[b]["clip"]["images_per_s"])
    if args.open_clip_python:
        reference = run_open_clip(args.open_clip_python, args, geometry)
        results["open_clip"] = reference
        ours = results[best]["clip"]["images_per_s"]
        print(
            f"open_clip {reference['open_clip']} (torch {reference['torch']}): "
            f"{reference['images_per_s']:.1f} img/s; best keras_silc CLIP step ({best}): "
            f"{ours:.1f} img/s = {ours / reference['images_per_s']:.2f}x open_clip"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"geometry": geometry, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
