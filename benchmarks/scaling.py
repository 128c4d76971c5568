"""Throughput and peak memory of a SILC step against batch size and precision.

For each (batch size, precision, mode) the step runs in its own process (so peak memory is that
configuration's alone) on the current `KERAS_BACKEND`: `train_on_batch` after compilation and
warm-up steps. Modes: `silc` (all views, teacher, distillation head), `clip` (the full image
only: the baseline measured in the same run) and `silc_remat` (SILC with every transformer
block rematerialised: `vision`/`text` `remat=True`) and `silc_accumM` (SILC in M micro-batches:
`gradient_accumulation_steps=M`, e.g. `silc_accum4`); compare the last two's memory and time
with `silc`. Printed per configuration: images/s, model
FLOP/s (analytic count from train_step.py) and peak memory: host RSS on a CPU
(`ru_maxrss`), device peak on a GPU (`torch.cuda.max_memory_allocated` or JAX's
`peak_bytes_in_use`). Ratios: mixed_bfloat16 against float32 at the same batch and mode, and
SILC against CLIP at the same batch and precision.

    python benchmarks/scaling.py                                 # CPU: batches 8,16,32
    python benchmarks/scaling.py --batch-sizes 16 --steps 2      # smoke test
    KERAS_BACKEND=jax python benchmarks/scaling.py --preset silc_b16 --batch-sizes 256,512 \\
        --peak-flops 989e12                                      # an H200 (bf16 dense peak)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from train_step import GEOMETRY  # noqa: E402
from train_step import model_overrides  # noqa: E402
from train_step import step_flops  # noqa: E402

RESULT = "RESULT "


def paper_geometry(preset):
    """train_step.py's geometry dict for a paper preset (for the FLOP count)."""
    from keras_silc.models.presets import preset_config

    c = preset_config(preset)
    v, t, h = c["vision"], c["text"], c["head"]
    return {
        "image_size": v["image_size"],
        "patch_size": v["patch_size"],
        "width": v["width"],
        "depth": v["depth"],
        "heads": v["num_heads"],
        "text_width": t["width"],
        "text_depth": t["depth"],
        "text_heads": t["num_heads"],
        "context_length": t["max_length"],
        "vocab_size": t["vocabulary_size"],
        "num_prototypes": h["num_prototypes"],
        "head_hidden": h["hidden_dim"],
        "bottleneck": h["bottleneck_dim"],
        "global_crops": c["num_global_crops"],
        "local_crops": c["num_local_crops"],
        "local_size": c["local_crop_size"],
    }


def peak_memory_bytes():
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated(), "device"
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.memory_stats().get("peak_bytes_in_use", 0), "device"
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"], "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"


def worker(args):
    import keras

    from keras_silc import SilcModel
    from keras_silc.experiments import TABLE6_ROWS

    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    switches = TABLE6_ROWS["clip"] if args.mode == "clip" else {}
    if args.mode == "silc_remat":
        switches = {"vision": {"remat": True}, "text": {"remat": True}}
    elif args.mode.startswith("silc_accum"):
        switches = {"gradient_accumulation_steps": int(args.mode.removeprefix("silc_accum"))}
    if args.preset:
        geometry = paper_geometry(args.preset)
        model = SilcModel.from_preset(args.preset, **switches)
    else:
        from keras_silc.models.presets import merge_config

        geometry = dict(GEOMETRY)
        model = SilcModel.from_config(merge_config(model_overrides(geometry), switches))
    geometry["batch_size"] = args.batch_size
    model.compile(warmup_steps=0)
    batch = model.preprocessor.example_batch(args.batch_size, seed=0)
    batch = {k: v for k, v in batch.items() if k in model.required_keys()}
    model.train_on_batch(batch)  # compiles
    for _ in range(args.warmup):
        model.train_on_batch(batch)
    start = time.perf_counter()
    for _ in range(args.steps):
        logs = model.train_on_batch(batch, return_dict=True)  # floats: waits for the step
    seconds = (time.perf_counter() - start) / args.steps
    assert all(v == v for v in logs.values()), logs
    memory, where = peak_memory_bytes()
    flops = step_flops(geometry, "clip" if args.mode == "clip" else "silc")  # model FLOPs
    print(
        RESULT
        + json.dumps(
            {
                "backend": keras.backend.backend(),
                "seconds_per_step": seconds,
                "images_per_s": args.batch_size / seconds,
                "flops_per_s": flops / seconds,
                "peak_memory_bytes": memory,
                "memory_kind": where,
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--modes", default="clip,silc")
    parser.add_argument("--preset", help="a model preset (default: train_step.py's geometry)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-flops", type=float, help="device peak FLOP/s, for MFU")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    results = {}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for precision in args.precisions.split(","):
            for mode in args.modes.split(","):
                command = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--worker",
                    f"--batch-size={batch_size}",
                    f"--precision={precision}",
                    f"--mode={mode}",
                    f"--steps={args.steps}",
                    f"--warmup={args.warmup}",
                ]
                if args.preset:
                    command.append(f"--preset={args.preset}")
                out = subprocess.run(command, capture_output=True, text=True)
                lines = [x for x in out.stdout.splitlines() if x.startswith(RESULT)]
                if not lines:
                    print(out.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"batch {batch_size} {precision} {mode} failed")
                result = json.loads(lines[-1][len(RESULT) :])
                results[(batch_size, precision, mode)] = result
                print(
                    f"batch {batch_size:5d} {precision:15s} {mode:5s}: "
                    f"{result['images_per_s']:8.1f} images/s, "
                    f"{result['peak_memory_bytes'] / 2**20:8.0f} MiB peak",
                    flush=True,
                )

    backend = next(iter(results.values()))["backend"]
    kind = next(iter(results.values()))["memory_kind"]
    print(f"\nbackend {backend}; peak memory = {kind}\n")
    header = (
        "| batch | precision | mode | images/s | TFLOP/s | peak MiB | vs float32 | vs clip "
        "| memory vs silc |"
    )
    if args.peak_flops:
        header = header[:-1] + " MFU |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for (batch_size, precision, mode), r in results.items():
        base = results.get((batch_size, "float32", mode))
        clip = results.get((batch_size, precision, "clip"))
        vs_float32 = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        vs_clip = f"{clip['images_per_s'] / r['images_per_s']:.2f}x cost" if clip else "-"
        silc = results.get((batch_size, precision, "silc"))
        memory_vs_silc = (
            f"{r['peak_memory_bytes'] / silc['peak_memory_bytes']:.2f}x"
            if silc and mode.startswith(("silc_remat", "silc_accum"))
            else "-"
        )
        row = (
            f"| {batch_size} | {precision} | {mode} | {r['images_per_s']:.1f} | "
            f"{r['flops_per_s'] / 1e12:.3f} | {r['peak_memory_bytes'] / 2**20:.0f} | "
            f"{vs_float32} | {vs_clip if mode != 'clip' else '-'} | {memory_vs_silc} |"
        )
        if args.peak_flops:
            row += f" {r['flops_per_s'] / args.peak_flops:.1%} |"
        print(row)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                [{"batch": b, "precision": p, "mode": m, **r} for (b, p, m), r in results.items()],
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
