"""Training FLOPs per step of the Table 6 rows, and the compute-matched baselines' steps.

Each row's model is built as `reproduce_table6.build_run` builds it (the demo's 64 px model,
the table's batch of 64, one batch through the table's input pipeline), and XLA counts the
floating-point operations of its jit-compiled train step (forward, backward, optimizer, EMA
teacher and center updates): `jax.jit(model.train_step).lower(state, batch).compile()
.cost_analysis()["flops"]`. The input pipeline's augmentation is not counted. From the
counts, the steps at which CLIP spends SILC-C's training FLOPs of `--steps` steps, and SigLIP
SILC-S's: the `clip_compute` and `siglip_compute` rows of reproduce_table6.py.

    KERAS_BACKEND=jax python benchmarks/train_flops.py          # the table's rows
    KERAS_BACKEND=jax python benchmarks/train_flops.py --rows clip,silc_c --batch-size 8

The counts are hard-coded in reproduce_table6.TRAIN_FLOPS; this script prints the line to
paste there when the model or the recipe changes.
"""

import argparse
import importlib.util
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def table6_script():
    """benchmarks/reproduce_table6.py as a module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reproduce_table6.py")
    spec = importlib.util.spec_from_file_location("reproduce_table6", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def train_step_flops(model, batch):
    """XLA's count of the floating-point operations of one jit-compiled train step."""
    import jax
    import numpy as np

    model.optimizer.build(model.trainable_variables)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    batch = {key: np.asarray(value) for key, value in batch.items()}
    compiled = jax.jit(model.train_step).lower(state, batch).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per device
        cost = cost[0]
    # A while loop's body would be counted once, not once per iteration.
    if " while(" in compiled.as_text():
        raise ValueError("the train step has a while loop: XLA's count would be too low")
    return float(cost["flops"])


def row_flops(rows, batch_size, num_scenes=2000, steps=None):
    """{row: training FLOPs per step} at `batch_size`, the table's model and recipe."""
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("train_flops counts XLA's operations: run it with KERAS_BACKEND=jax")
    script = table6_script()
    steps = steps or script.TABLE_STEPS
    flops = {}
    for row in rows:
        model, dataset, _ = script.build_run(
            row,
            0,
            steps=steps,
            batch_size=batch_size,
            num_scenes=num_scenes,
            vocabulary_size=1000,
            class_only_captions=1.0,
        )
        flops[row] = train_step_flops(model, next(iter(dataset)))
    return flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", default="clip,silc_c,siglip,silc_s,clip_views,clip_views_ema,siglip_views_ema"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500, help="SILC's steps to match")
    args = parser.parse_args()
    rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    flops = row_flops(rows, args.batch_size)
    for row, count in flops.items():
        print(f"{row:18s} {count / 1e9:10.3f} GFLOPs per step of {args.batch_size}")
    for silc, baseline in (("silc_c", "clip"), ("silc_s", "siglip")):
        if silc in flops and baseline in flops:
            ratio = flops[silc] / flops[baseline]
            print(
                f"{baseline} at {silc}'s compute: {round(args.steps * ratio)} steps "
                f"({ratio:.3f} x {args.steps}; {flops[silc] * args.steps / 1e12:.2f} TFLOPs)"
            )
    print("TRAIN_FLOPS = {" + ", ".join(f'"{r}": {c / 1e9:.3f}e9' for r, c in flops.items()) + "}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
