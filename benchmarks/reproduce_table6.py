"""The paper's Table 6 ablation at CPU scale, on Fashion-MNIST scenes.

Rows (at the same number of examples seen unless said otherwise, several seeds each):

* CLIP                      - contrastive loss on the full image only;
* + additional views        - the global crops also enter the contrastive loss;
* + EMA                     - an EMA of the weights, evaluated (the teacher tower);
* + self-distillation       - SILC-C: local crops distilled from the EMA teacher;
* SigLIP, SILC-S            - the same pair with the sigmoid loss;
* SigLIP + views + EMA      - SILC-S without the distillation, the control that tells what
                              the distillation adds to the SigLIP pair (not in the paper);
* CLIP, SigLIP at SILC's compute - the baselines trained for as many FLOPs as SILC-C and
                              SILC-S (more steps: TRAIN_FLOPS, benchmarks/train_flops.py).

Every run trains `demo.DEMO_OVERRIDES` (the demo's 64 px model) with the demo's recipe and
augmentation on Fashion-MNIST train scenes, then runs `demo.evaluate_fashion` on the test split
(zero-shot classification, few-shot linear probes, retrieval, zero-shot segmentation). Each
(row, seed) runs in its own process and writes `<output>/<row>-seed<k>.json`; a rerun skips
finished runs, so an interrupted table resumes. The table is printed and written to
`--table`: each row's mean, std and 95% interval over seeds, and every comparison (SILC
against its baseline at equal examples and at equal compute, against itself without the
distillation, and the views' and the EMA's steps) as per-seed paired differences with a t test,
Holm-corrected over the table; a claim needs 5 paired seeds. `--no-train` rebuilds the table
from the runs a folder holds and lists the missing ones.

    python benchmarks/reproduce_table6.py --jobs 2               # 9 rows x 3 seeds
    python benchmarks/reproduce_table6.py --rows clip,silc_c     # one CLIP-vs-SILC pair
    python benchmarks/reproduce_table6.py --quick                # smoke test (CI)
    python benchmarks/reproduce_table6.py --no-train --output docs/runs/table6/same

Defaults are those of the table in docs/results.md: 1,500 steps of 64, class-only captions,
train scenes whose 2-4 items share one class (`--scene-classes distinct` for mixed ones).
"""

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROWS = {
    "clip": ("CLIP", {"contrastive_loss": "clip", "row": "clip"}),
    "clip_views": ("+ additional views", {"contrastive_loss": "clip", "row": "clip+views"}),
    "clip_views_ema": ("+ EMA", {"contrastive_loss": "clip", "row": "clip+views+ema"}),
    "silc_c": ("+ self-distillation (SILC-C)", {"contrastive_loss": "clip", "row": "silc"}),
    "siglip": ("SigLIP", {"contrastive_loss": "siglip", "row": "clip"}),
    "siglip_views_ema": (
        "SigLIP + views + EMA",
        {"contrastive_loss": "siglip", "row": "clip+views+ema"},
    ),
    "silc_s": ("SILC-S", {"contrastive_loss": "siglip", "row": "silc"}),
    # The baselines trained for as many FLOPs as their SILC row (TRAIN_FLOPS): more steps.
    "clip_compute": (
        "CLIP at SILC-C's compute",
        {"contrastive_loss": "clip", "row": "clip", "compute_of": "silc_c"},
    ),
    "siglip_compute": (
        "SigLIP at SILC-S's compute",
        {"contrastive_loss": "siglip", "row": "clip", "compute_of": "silc_s"},
    ),
}
# SILC's row and the contrastive baseline it must beat, at equal examples seen.
PAIRS = {"silc_c": "clip", "silc_s": "siglip"}
# The same, at equal training FLOPs.
COMPUTE_PAIRS = {"silc_c": "clip_compute", "silc_s": "siglip_compute"}
# SILC's row and the same row without the distillation: what the distillation itself adds.
CONTROLS = {"silc_c": "clip_views_ema", "silc_s": "siglip_views_ema"}
# Every comparison the table makes: (row, baseline, what it asks), equal examples and equal
# compute side by side. Together they are the family of the Holm correction.
COMPARISONS = tuple(
    [
        comparison
        for silc in PAIRS
        for comparison in (
            (silc, PAIRS[silc], "equal examples"),
            (silc, COMPUTE_PAIRS[silc], "equal compute"),
        )
    ]
    + [(silc, control, "the distillation alone") for silc, control in CONTROLS.items()]
    # The paper's other two steps of Table 6: what the views add, then what the EMA adds.
    + [("clip_views", "clip", "the views alone"), ("clip_views_ema", "clip_views", "the EMA alone")]
)
# A comparison is a claim only at this many paired seeds; the test's level, after Holm.
MIN_SEEDS = 5
ALPHA = 0.05
# Training FLOPs per step of each row's model at FLOPS_BATCH, counted by XLA on the
# jit-compiled train step (benchmarks/train_flops.py, which prints this line).
# Measured with KERAS_BACKEND=jax (JAX 0.10, CPU); SILC's step is 3.74 CLIP steps.
FLOPS_BATCH = 64
TRAIN_FLOPS = {
    "clip": 7.402e9,
    "silc_c": 27.713e9,
    "siglip": 7.402e9,
    "silc_s": 27.713e9,
    "clip_views": 18.420e9,
    "clip_views_ema": 18.422e9,
    "siglip_views_ema": 18.422e9,
}
# `--set` keys that act only on the self-distillation. The rows without it do not take them,
# so that an ablation of the head or the temperatures shares its baselines' runs (--reuse).
# Not head.num_layers: each layer's initializer draws a seed, so the head's depth shifts the
# text tower's initialisation in every row (tests/test_model.py checks this list).
DISTILLATION_ONLY = (
    "head.num_prototypes",
    "head.hidden_dim",
    "head.bottleneck_dim",
    "head.batch_norm",
    "distillation_weight",
    "student_temperature",
    "teacher_temperature",
    "warmup_teacher_temperature",
    "teacher_temperature_warmup_steps",
    "freeze_last_layer_steps",
    "center_momentum",
    # The input pipeline makes no local crops for a model without self-distillation, and
    # the global crops' seeds do not depend on them.
    "num_local_crops",
    "local_crop_size",
)
# What a collapsed head means for the table's reader (evaluation.distillation_diagnostics).
COLLAPSE_MEANINGS = {
    "uniform": "uniform: every image gets a flat target, so the distillation teaches nothing",
    "dominant": "dominant: one prototype takes every image, so the target says nothing",
}
# Test scenes on which a trained SILC row's head is checked for collapse.
DIAGNOSTIC_SCENES = 256
# The table in docs/results.md: 1,500 steps of demo.DEMO_BATCH (96,000 examples seen).
TABLE_STEPS = 1500
# fashion_scenes' defaults: 2-4 items of distinct classes, each 25-50% of the canvas side.
# Runs recorded before a scene key existed were made with these values.
FASHION_SCENE = {
    "min_items": 2,
    "max_items": 4,
    "item_size_range": [0.25, 0.5],
    "classes": "distinct",
}
# The table's train scenes: the same, with all items of a scene of one class, so that a local
# crop predicts the teacher's target (docs/results.md). --items, --item-size and
# --scene-classes change them; the evaluation (distinct-class test scenes) never does.
DEFAULT_SCENE = {**FASHION_SCENE, "classes": "same"}
METRICS = {
    "zero_shot/top1": "ZS top-1",
    "few_shot/1shot_mean": "1-shot",
    "few_shot/10shot_mean": "10-shot",
    "retrieval/i2t_recall@1": "I2T@1",
    "retrieval/t2i_recall@1": "T2I@1",
    "segmentation/miou": "ZS mIoU",
}


def build_run(
    row,
    seed,
    *,
    steps,
    batch_size,
    num_scenes,
    vocabulary_size,
    class_only_captions,
    data_seed=None,
    overrides=(),
    augmentation=None,
    scene=None,
):
    """A (row, seed)'s compiled model, training dataset and model config: the demo's model
    and recipe (scheduled over `steps`) on Fashion-MNIST train scenes, plus `--set`-style
    `overrides` and entries merged into `demo.FASHION_AUGMENTATION`. `scene` (default
    `DEFAULT_SCENE`) sets the train scenes' item count, size and classes."""
    import keras

    from keras_silc import SilcModel
    from keras_silc import data
    from keras_silc.cli import parse_overrides
    from keras_silc.experiments import TABLE6_ROWS
    from keras_silc.experiments import fashion as demo
    from keras_silc.models.presets import merge_config

    spec = ROWS[row][1]
    # A scene recorded before a key existed takes the value it was made with.
    scene = DEFAULT_SCENE if scene is None else {**FASHION_SCENE, **scene}
    keras.utils.set_random_seed(seed)
    scenes = data.fashion_scenes(
        "train",
        num_scenes,
        64,
        seed=seed if data_seed is None else data_seed,
        class_only_captions=class_only_captions,
        min_items=scene["min_items"],
        max_items=scene["max_items"],
        item_size_range=tuple(scene["item_size_range"]),
        scene_classes=scene["classes"],
    )
    captions = list(scenes["caption"])
    tokenizer = data.SilcTokenizer.from_captions(
        captions, vocabulary_size, demo.DEMO_OVERRIDES["text"]["max_length"], "wordpiece"
    )
    config = merge_config(
        demo.DEMO_OVERRIDES,
        {
            "text": {"vocabulary_size": tokenizer.vocabulary_size},
            "recipe": demo.recipe_for(steps),
            "contrastive_loss": spec["contrastive_loss"],
            **TABLE6_ROWS[spec["row"]],
        },
    )
    config = merge_config(config, parse_overrides(list(overrides)))
    model = SilcModel.from_preset("silc_tiny", tokenizer=tokenizer, **config)
    model.compile()
    dataset = data.training_dataset(
        data.from_arrays(scenes["image"], scenes["caption"]),
        model.preprocessor,
        batch_size,
        augmentation={**demo.FASHION_AUGMENTATION, **(augmentation or {})},
        seed=seed,
    )
    return model, dataset, config


def train_and_evaluate(row, seed, args):
    """One (row, seed): train, evaluate; a dict of results."""
    import keras

    from keras_silc import data
    from keras_silc.experiments import fashion as demo

    data_seed = seed if args.data_seed is None else args.data_seed
    steps = row_steps(row, args.steps)
    model, dataset, config = build_run(
        row,
        seed,
        steps=steps,
        batch_size=args.batch_size,
        num_scenes=args.num_scenes,
        vocabulary_size=args.vocabulary_size,
        class_only_captions=args.class_only_captions,
        data_seed=data_seed,
        overrides=row_overrides(row, args.set),
        scene=scene_of(args),
    )
    start = time.time()
    history = model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    train_seconds = time.time() - start
    # The trained weights, so that a run can be evaluated again without training it again.
    os.makedirs(args.output, exist_ok=True)
    model.save_weights(run_path(args, row, seed).replace(".json", ".weights.h5"))
    start = time.time()
    results = demo.evaluate_fashion(
        model, num_items=args.eval_items, num_scenes=args.eval_scenes, shots=(1, 10)
    )
    distillation = None
    if model.self_distillation:
        # The trained head itself (the logs are run means): has it collapsed?
        from keras_silc import evaluation

        probe = data.fashion_scenes("test", DIAGNOSTIC_SCENES, 64, seed=0)["image"]
        distillation = evaluation.distillation_diagnostics(model, probe)
    flops = flops_per_step(row, args.batch_size, row_overrides(row, args.set))
    return {
        "row": row,
        "seed": seed,
        "backend": keras.backend.backend(),
        "steps": steps,
        "batch_size": args.batch_size,
        "examples_seen": steps * args.batch_size,
        # XLA's count of the model's train step (TRAIN_FLOPS), where it was counted.
        "flops_per_step": flops,
        "train_flops": None if flops is None else steps * flops,
        "class_only_captions": args.class_only_captions,
        "overrides": row_overrides(row, args.set),
        "eval_items": args.eval_items,
        "eval_scenes": args.eval_scenes,
        "num_scenes": args.num_scenes,
        "data_seed": data_seed,
        "scene": scene_of(args),
        "config": config,
        "final_loss": float(history.history["loss"][-1]),
        # One epoch: each log is its mean over the run.
        "final_logs": {k: float(v[-1]) for k, v in history.history.items()},
        "train_seconds": train_seconds,
        "eval_seconds": time.time() - start,
        "results": results,
        "distillation": distillation,
    }


def baseline_of(row):
    """The row whose model `row` trains: itself, or for a compute-matched row its baseline."""
    spec = ROWS[row][1]
    return PAIRS[spec["compute_of"]] if "compute_of" in spec else row


def row_steps(row, steps):
    """The steps `row` trains for in a table of `steps`: `steps`, or for a compute-matched
    baseline as many as spend its SILC row's training FLOPs of `steps` (TRAIN_FLOPS)."""
    spec = ROWS[row][1]
    if "compute_of" not in spec:
        return steps
    return round(steps * TRAIN_FLOPS[spec["compute_of"]] / TRAIN_FLOPS[baseline_of(row)])


def flops_per_step(row, batch_size, overrides):
    """`row`'s training FLOPs per step where TRAIN_FLOPS counted its model (the table's
    model at FLOPS_BATCH, no --set); else None."""
    if batch_size != FLOPS_BATCH or overrides:
        return None
    return TRAIN_FLOPS.get(baseline_of(row))


def scene_of(args):
    """The train scenes that `--items`, `--item-size` and `--scene-classes` ask for."""
    return {
        "min_items": args.items[0],
        "max_items": args.items[1],
        "item_size_range": list(args.item_size),
        "classes": args.scene_classes,
    }


def count_text(pair):
    """'1' for (1, 1), '2-4' for (2, 4)."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}-{pair[1]}"


def number_pair(kind, text):
    """'A,B' -> (A, B) with A <= B, for --items (ints) and --item-size (floats)."""
    try:
        low, high = (kind(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two {kind.__name__}s as MIN,MAX (e.g. 1,1 or 0.4,0.8), got {text!r}"
        ) from None
    if low > high:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX, got {text!r}")
    return low, high


def row_overrides(row, overrides):
    """The `--set` overrides that `row` takes: all of them for the SILC rows; for the others,
    those that do not act only on the self-distillation (DISTILLATION_ONLY)."""
    if ROWS[row][1]["row"] == "silc":
        return sorted(overrides)
    return sorted(
        pair for pair in overrides if pair.split("=", 1)[0].strip() not in DISTILLATION_ONLY
    )


def teacher_summary(run):
    """The distillation's state, where the row has one: the Keras logs (means over the run)
    and, where recorded, the trained teacher on test scenes (`distillation_diagnostics`)."""
    logs = run.get("final_logs", {})
    if "teacher_entropy" not in logs:
        return ""
    text = (
        f", teacher entropy {logs['teacher_entropy']:.2f} and KL "
        f"{logs['student_teacher_kl']:.3f} (run means)"
    )
    state = run.get("distillation")
    if state:
        text += (
            f"; trained teacher on {DIAGNOSTIC_SCENES} test scenes: entropy "
            f"{state['entropy']:.2f} of {state['max_entropy']:.2f}, bottleneck cosine "
            f"{state['bottleneck_cosine']:.3f}, collapse {state['collapse']}"
        )
    return text


def run_order(rows, seeds, order="seeds"):
    """The (row, seed) cells in the order they train: seed-major (a partial table has every
    row at the first seeds) or row-major (a row reaches the seeds of a claim soonest)."""
    if order == "rows":
        return [(row, seed) for row in rows for seed in seeds]
    return [(row, seed) for seed in seeds for row in rows]


def run_path(args, row, seed):
    return os.path.join(args.output, f"{row}-seed{seed}.json")


def worker_command(args, row, seed):
    """The command that runs one (row, seed) in a fresh process (clean graph, memory, RNG)."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", row, "--seed", str(seed)]
    for flag in ("steps", "batch_size", "num_scenes", "eval_items", "eval_scenes", "output"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.data_seed is not None:
        command += ["--data-seed", str(args.data_seed)]
    command += ["--items", ",".join(map(str, args.items))]
    command += ["--item-size", ",".join(map(str, args.item_size))]
    command += ["--scene-classes", args.scene_classes]
    command += ["--vocabulary-size", str(args.vocabulary_size)]
    command += ["--class-only-captions", str(args.class_only_captions)]
    for pair in args.set:
        command += ["--set", pair]
    return command


def worker_cpus(slot, jobs):
    """The CPUs of worker slot `slot` of `jobs`: the machine's CPUs split evenly, so that
    parallel runs do not compete for cores (None where affinity is not available)."""
    if jobs == 1 or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    share = max(1, len(cpus) // jobs)
    return cpus[(slot * share) % len(cpus) :][:share]


def run_queue(args, queue):
    """Runs the (row, seed) pairs of `queue`, `args.jobs` at a time, each on its own CPUs
    (OpenMP, MKL and TensorFlow get as many threads; JAX is held to them by the affinity).
    A failed run stops the table."""
    pending, running = list(queue), {}
    while pending or running:
        while pending and len(running) < args.jobs:
            row, seed = pending.pop(0)
            slot = min(set(range(args.jobs)) - {s for s, _ in running.values()})
            cpus = worker_cpus(slot, args.jobs)
            env = dict(os.environ)
            if cpus is not None:
                threads = str(len(cpus))
                for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
                    env[name] = threads
                env["TF_NUM_INTEROP_THREADS"] = "1"
            steps = row_steps(row, args.steps)
            print(f"[table6] {row} seed {seed}: training {steps} steps", flush=True)
            process = subprocess.Popen(
                worker_command(args, row, seed),
                env=env,
                preexec_fn=(lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
            running[process] = (slot, (row, seed))
        while (finished := next((p for p in running if p.poll() is not None), None)) is None:
            time.sleep(1.0)
        _, (row, seed) = running.pop(finished)
        if finished.returncode:
            for process in running:
                process.terminate()
            raise SystemExit(f"[table6] {row} seed {seed} failed (exit {finished.returncode}).")


def settings_mismatch(run, args):
    """None where the finished `run` was made with this invocation's settings; else what
    it was made with."""
    settings = (
        run["steps"],
        run["batch_size"],
        run.get("class_only_captions", 0.0),
        run.get("overrides", []),
        # Runs from before these were recorded used 2,000 items and 500 scenes.
        run.get("eval_items", 2000),
        run.get("eval_scenes", 500),
        run.get("num_scenes", 20_000),
        # The train scenes' seed: the run's own seed unless --data-seed fixed it.
        run.get("data_seed", run["seed"]),
        # Runs from before --scene-classes recorded no "classes": they drew distinct ones.
        {**FASHION_SCENE, **run.get("scene", {})},
    )
    wanted = (
        row_steps(run["row"], args.steps),
        args.batch_size,
        args.class_only_captions,
        row_overrides(run["row"], args.set),
        args.eval_items,
        args.eval_scenes,
        args.num_scenes,
        run["seed"] if args.data_seed is None else args.data_seed,
        scene_of(args),
    )
    if settings == wanted:
        return None
    return (
        f"a run of {run['steps']} steps of {run['batch_size']} with "
        f"class_only_captions={settings[2]}, --set {settings[3]}, evaluated on "
        f"{settings[4]} items and {settings[5]} scenes, {settings[6]} train scenes "
        f"(data seed {settings[7]}, {settings[8]})"
    )


def check_settings(path, args):
    with open(path) as handle:
        run = json.load(handle)
    mismatch = settings_mismatch(run, args)
    if mismatch:
        raise SystemExit(f"{path} is from {mismatch}; use another --output or delete it.")
    return run


def reuse_runs(args, order):
    """Copies into --output the runs of `order` that a --reuse folder holds with this
    invocation's settings (JSON and weights), so they are not trained again. A --reuse
    folder that does not exist or holds no run is an error (a typo would retrain silently)."""
    for folder in args.reuse:
        if not os.path.isdir(folder):
            raise SystemExit(f"--reuse {folder}: no such folder.")
        if not any(name.endswith(".json") for name in os.listdir(folder)):
            raise SystemExit(f"--reuse {folder}: the folder holds no run (no .json file).")
    for row, seed in order:
        target = run_path(args, row, seed)
        if os.path.exists(target):
            continue
        for folder in args.reuse:
            source = os.path.join(folder, os.path.basename(target))
            if not os.path.exists(source):
                continue
            with open(source) as handle:
                run = json.load(handle)
            mismatch = settings_mismatch(run, args)
            if mismatch:
                print(f"[table6] {row} seed {seed}: not reused from {folder}, {mismatch}")
                continue
            os.makedirs(args.output, exist_ok=True)
            weights = source.replace(".json", ".weights.h5")
            if os.path.exists(weights):
                shutil.copyfile(weights, target.replace(".json", ".weights.h5"))
            shutil.copyfile(source, target)
            print(f"[table6] {row} seed {seed}: reused from {folder}")
            break


# ------------------------------------------------------------------ statistics
def t_quantile(probability, df):
    """The Student t distribution's quantile."""
    from scipy import stats

    return float(stats.t.ppf(probability, df))


def mean_interval(values, level=0.95):
    """{mean, std, n, low, high} of `values`: the sample std and the Student t interval of
    the mean (low and high None under two values)."""
    n = len(values)
    mean = statistics.mean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    if n < 2:
        return {"mean": mean, "std": std, "n": n, "low": None, "high": None}
    half = t_quantile(0.5 + level / 2, n - 1) * std / n**0.5
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half}


def paired_difference(row, baseline, level=0.95):
    """The per-seed differences row - baseline ({seed: value} each) over the seeds both have
    (same seed: same train scenes and initialisation): `mean_interval`'s keys, the seeds,
    and the paired t test's statistic t and two-sided p (None under two seeds)."""
    seeds = sorted(set(row) & set(baseline))
    differences = [row[seed] - baseline[seed] for seed in seeds]
    if not differences:
        return {"seeds": [], "n": 0, "mean": None, "std": None, "low": None, "high": None,
                "t": None, "p": None}  # fmt: skip
    result = {"seeds": seeds, **mean_interval(differences, level), "t": None, "p": None}
    n = result["n"]
    if n < 2:
        return result
    if result["std"] == 0.0:  # every seed gives the same difference
        result["t"] = (
            0.0 if result["mean"] == 0 else float("inf") * (1 if result["mean"] > 0 else -1)
        )
        result["p"] = 1.0 if result["mean"] == 0 else 0.0
        return result
    from scipy import stats

    result["t"] = result["mean"] / (result["std"] / n**0.5)
    result["p"] = float(2 * stats.t.sf(abs(result["t"]), n - 1))
    return result


def holm(pvalues):
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest is
    max over j <= k of min(1, (m - j + 1) p_(j)). Rejecting where adjusted p < alpha controls
    the family-wise error rate at alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare(
    runs, rows=None, comparisons=COMPARISONS, metrics=METRICS, min_seeds=MIN_SEEDS, alpha=ALPHA
):
    """Every (comparison, metric) that the runs allow: the paired difference over seeds, its
    95% t interval and p, the Holm-adjusted p and a verdict. A list of dicts.

    The family of the correction is planned, not found: every comparison between two of
    `rows` (default: all) x every metric, whether or not its runs have finished, so that a
    verdict does not move when more of the grid lands. While part of the family cannot be
    tested yet (under `min_seeds` paired seeds), a test's final Holm-adjusted p lies between
    Holm's over the tests that exist (the missing ones all smaller) and Bonferroni's over the
    planned family (its bound): "holm_p" is that (low, high) pair, equal once the family is
    complete. The verdict is "beats" or "worse" where even the high end rejects at `alpha`,
    "not resolved" where even the low end does not, "pending" in between, and no claim under
    `min_seeds` seeds."""
    rows = set(ROWS if rows is None else rows)
    planned = [c for c in comparisons if c[0] in rows and c[1] in rows]
    by_row = collections.defaultdict(dict)
    for run in runs:
        by_row[run["row"]][run["seed"]] = run["results"]
    results = []
    for row, baseline, question in planned:
        for metric in metrics:
            a = {s: r[metric] for s, r in by_row.get(row, {}).items() if metric in r}
            b = {s: r[metric] for s, r in by_row.get(baseline, {}).items() if metric in r}
            test = paired_difference(a, b)
            if test["n"] == 0:
                continue
            results.append(
                {"row": row, "baseline": baseline, "question": question, "metric": metric,
                 **test, "holm_p": None}
            )  # fmt: skip
    family = [r for r in results if r["n"] >= min_seeds]
    planned_size = len(planned) * len(metrics)
    for result, adjusted in zip(family, holm([r["p"] for r in family]), strict=True):
        bound = adjusted if len(family) == planned_size else min(1.0, planned_size * result["p"])
        result["holm_p"] = (adjusted, bound)
    for result in results:
        if result["n"] < min_seeds:
            result["verdict"] = f"fewer than {min_seeds} seeds: no claim"
        elif result["holm_p"][1] < alpha:
            result["verdict"] = "beats" if result["mean"] > 0 else "worse"
        elif result["holm_p"][0] >= alpha:
            result["verdict"] = "not resolved"
        else:
            result["verdict"] = "pending"
    return results, planned_size


def summarize(runs, rows):
    """{row: {metric: mean_interval}} over seeds."""
    table = {}
    for row in rows:
        values = [run["results"] for run in runs if run["row"] == row]
        if not values:
            continue
        table[row] = {}
        for metric in METRICS:
            series = [v[metric] for v in values if metric in v]
            if series:
                table[row][metric] = mean_interval(series)
    return table


def missing_cells(runs, rows, seeds):
    """{row: [seeds]} of the (row, seed) cells that `runs` lack."""
    have = {(run["row"], run["seed"]) for run in runs}
    missing = {row: [s for s in seeds if (row, s) not in have] for row in rows}
    return {row: found for row, found in missing.items() if found}


def percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def signed(value):
    return "-" if value is None else f"{100 * value:+.1f}"


def p_text(value):
    return "-" if value is None else f"{value:.2g}" if value >= 0.001 else "<0.001"


def holm_text(bounds):
    """A Holm-adjusted p, or the range it will fall in once the family is complete."""
    if bounds is None:
        return "-"
    low, high = bounds
    return p_text(low) if low == high else f"{p_text(low)} to {p_text(high)}"


def markdown(table, runs, args, wall_seconds, missing=None, rows=None):
    """The summary table (mean +/- std and 95% interval over seeds), the paired comparisons
    with their Holm-corrected tests, the heads' state and the settings."""
    lines = []
    if missing:
        lines.append(
            "Partial grid: missing "
            + "; ".join(f"{row} seed(s) {', '.join(map(str, s))}" for row, s in missing.items())
            + "."
        )
        lines.append("")
    lines.append("| model | seeds | " + " | ".join(METRICS.values()) + " |")
    lines.append("|---" * (len(METRICS) + 2) + "|")
    for row, cells in table.items():
        text = []
        for metric in METRICS:
            cell = cells.get(metric)
            if cell is None:
                text.append("-")
            elif cell["low"] is None:
                text.append(percent(cell["mean"]))
            else:
                text.append(
                    f"{percent(cell['mean'])} +/- {percent(cell['std'])} "
                    f"[{percent(cell['low'])}, {percent(cell['high'])}]"
                )
        seeds = max((cell["n"] for cell in cells.values()), default=0)
        steps = row_steps(row, args.steps)
        label = ROWS[row][0] + (f" ({steps:,} steps)" if steps != args.steps else "")
        lines.append(f"| {label} | {seeds} | " + " | ".join(text) + " |")
    lines.append("")
    lines.append(
        "Metrics in %: mean +/- std over seeds [95% Student t interval of the mean] (chance: "
        "zero-shot 10%)."
    )
    lines.append("")
    # The planned rows, finished or not: they fix the family of the correction.
    results, planned_size = compare(runs, rows=list(table) if rows is None else rows)
    if results:
        family = sum(result["holm_p"] is not None for result in results)
        lines.append(
            "| comparison | at | metric | seeds | difference | 95% interval | p | Holm p | verdict |"
        )
        lines.append("|---" * 9 + "|")
        for r in results:
            interval = "-" if r["low"] is None else f"[{signed(r['low'])}, {signed(r['high'])}]"
            lines.append(
                f"| {ROWS[r['row']][0]} minus {ROWS[r['baseline']][0]} | {r['question']} | "
                f"{METRICS[r['metric']]} | {r['n']} | {signed(r['mean'])} | {interval} | "
                f"{p_text(r['p'])} | {holm_text(r['holm_p'])} | {r['verdict']} |"
            )
        lines.append("")
        if family == planned_size:
            family_text = (
                f"Holm's correction runs over the family of this table's {family} tests: every "
                "comparison x metric above"
            )
        else:
            family_text = (
                f"Holm's correction runs over the family of the {planned_size} planned tests "
                "(every comparison x metric of the rows, planned before the runs); "
                f"{family} have {MIN_SEEDS} paired seeds so far, so the Holm p is the range "
                "it will fall in once the rest are in (Holm's over the tests done, "
                'Bonferroni\'s over the plan), and "pending" means that range straddles '
                f"{ALPHA}"
            )
        lines.append(
            "Differences in points, paired by seed (a seed fixes the train scenes and the "
            "initialisation): their mean, 95% Student t interval and two-sided paired t test. "
            f'{family_text}; "beats" ("worse") means the Holm-adjusted p is below {ALPHA} with '
            'a positive (negative) difference, "not resolved" that it is not; under '
            f"{MIN_SEEDS} seeds the numbers are printed and no claim is made."
        )
        lines.append("")
    collapsed = collections.Counter(
        (run["row"], run["distillation"]["collapse"]) for run in runs if run.get("distillation")
    )
    if collapsed:
        states = {state for _, state in collapsed}
        meanings = [COLLAPSE_MEANINGS[state] for state in sorted(states) if state != "none"]
        lines.append(
            "The trained teachers' distillation heads (distillation_diagnostics on "
            f"{DIAGNOSTIC_SCENES} test scenes): "
            + ", ".join(
                f"{ROWS[row][0]} {count} run(s) {state}"
                for (row, state), count in sorted(collapsed.items())
            )
            + (f" ({'; '.join(meanings)})." if meanings else ": no head collapsed.")
        )
        lines.append("")
    if not runs:
        lines.append("No finished runs yet.")
        return "\n".join(lines) + "\n"
    top1 = sum(run["results"]["zero_shot/top1"] for run in runs) / len(runs)
    lines.append(
        f"Evaluated on {args.eval_items:,} single test items and {args.eval_scenes:,} test "
        f"scenes; at the mean zero-shot top-1 ({100 * top1:.1f}%) the items alone give a "
        f"binomial standard error of {100 * (top1 * (1 - top1) / args.eval_items) ** 0.5:.1f} "
        "points per run."
    )
    lines.append("")
    seeds = sorted({run["seed"] for run in runs})
    train = sum(run["train_seconds"] for run in runs)
    backend = sorted({run["backend"] for run in runs})
    lines.append(
        f"{args.steps:,} steps of {args.batch_size} ({args.steps * args.batch_size:,} examples "
        f"seen) per run unless the row says otherwise, seeds {seeds}, backend "
        f"{', '.join(backend)}; training {train / 60:.1f} min over {len(runs)} run(s)"
        + (
            "."
            if getattr(args, "no_train", False)
            else f", wall time {wall_seconds / 60:.1f} min for this invocation."
        )
    )
    flops = {}
    for run in runs:
        # Runs recorded before the count was: TRAIN_FLOPS where it counted their model.
        per_step = run.get("flops_per_step") or flops_per_step(
            run["row"], run["batch_size"], run.get("overrides", [])
        )
        if per_step is not None:
            flops[run["row"]] = per_step * run["steps"]
    if flops:
        lines.append(
            "Training FLOPs per run (XLA's count of the train step, benchmarks/train_flops.py): "
            + ", ".join(f"{ROWS[row][0]} {count / 1e12:.1f} TFLOPs" for row, count in flops.items())
            + "."
        )
    by_row = collections.defaultdict(list)
    for run in runs:
        by_row[run["row"]].append(run["train_seconds"] / 60)
    # The median, because a run that shared the CPU with a test suite took several times longer.
    lines.append(
        "Measured training wall time per run, median over seeds (min-max): "
        + ", ".join(
            f"{ROWS[row][0]} {statistics.median(minutes):.1f} min "
            f"({min(minutes):.1f}-{max(minutes):.1f})"
            for row, minutes in sorted(by_row.items(), key=lambda item: list(ROWS).index(item[0]))
        )
        + "."
    )
    if args.set:
        lines.append(f"Overrides (--set): {', '.join(sorted(args.set))}.")
        skipped = sorted(set(args.set) - set(row_overrides("clip", args.set)))
        if skipped:
            lines.append(
                f"The rows without self-distillation do not take {', '.join(skipped)}: "
                "those act only on it."
            )
    # Always stated: tables on both kinds of train scenes sit side by side in docs/results.md.
    classes = "of distinct classes" if args.scene_classes == "distinct" else "all of one class"
    lines.append(
        f"Train scenes of {count_text(args.items)} item(s) {classes}, each "
        f"{args.item_size[0]:g}-{args.item_size[1]:g} of the canvas side (the evaluation's "
        "test scenes, of distinct classes, and items are the same as in every table)."
    )
    if args.data_seed is not None:
        lines.append(
            f"Every run trained on the same {args.num_scenes:,} scenes (data seed "
            f"{args.data_seed})."
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", default=None, help=f"comma-separated of {list(ROWS)} (default: all)"
    )
    parser.add_argument(
        "--seeds", default=None, help="default 0,1,2 (with --no-train: the seeds in --output)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"steps per run (default {TABLE_STEPS})"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: demo.DEMO_BATCH")
    parser.add_argument("--num-scenes", type=int, default=20_000)
    parser.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="draw every run's train scenes with this seed (default: the run's seed), to "
        "separate the spread that the training set brings from that of the initialisation "
        "and augmentation",
    )
    parser.add_argument(
        "--items",
        type=lambda text: number_pair(int, text),
        default=(DEFAULT_SCENE["min_items"], DEFAULT_SCENE["max_items"]),
        metavar="MIN,MAX",
        help="items per train scene (default 2,4; 1,1 gives one item per image, as in an "
        "object-centric data set)",
    )
    parser.add_argument(
        "--item-size",
        type=lambda text: number_pair(float, text),
        default=tuple(DEFAULT_SCENE["item_size_range"]),
        metavar="LO,HI",
        help="train items' side as a fraction of the canvas side (default 0.25,0.5)",
    )
    parser.add_argument(
        "--scene-classes",
        choices=("distinct", "same"),
        default=DEFAULT_SCENE["classes"],
        help="a train scene's items are all of one class (default: any item, and so any "
        "local crop, predicts the scene's class, while scenes keep several small items) or "
        "of distinct classes (fashion_scenes' default: no item predicts the others)",
    )
    parser.add_argument("--vocabulary-size", type=int, default=1000)
    parser.add_argument(
        "--class-only-captions",
        type=float,
        default=1.0,
        help="fraction of train scenes captioned with class names only (fashion_scenes); "
        "default 1.0, as the demo: with colour and position words a model this small learns "
        "those and not the classes",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model override for every row, as in `keras-silc train --set` "
        "(e.g. head.num_prototypes=256); recorded in each run's JSON",
    )
    parser.add_argument(
        "--eval-items",
        type=int,
        default=10_000,
        help="single test items for zero-shot and few-shot (default: the whole test split; "
        "at 37%% top-1 the binomial standard error is 0.5 points, against 1.1 at 2,000)",
    )
    parser.add_argument(
        "--eval-scenes", type=int, default=1000, help="test scenes for retrieval and segmentation"
    )
    parser.add_argument("--output", default="runs/table6", help="per-run JSON files")
    parser.add_argument("--table", default=None, help="also write the Markdown table here")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: build the table from the runs that --output holds, listing the "
        "(row, seed) cells that are missing",
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="FOLDER",
        help="take finished runs from this --output of another invocation where they match "
        "this one's settings; the rows without self-distillation ignore the --set keys that "
        f"act only on it ({', '.join(DISTILLATION_ONLY)}), so an ablation of those reuses "
        "its baselines",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time, each pinned to its share of the CPUs (on a small CPU, 2 runs "
        "of one thread each finish sooner than 2 runs one after the other)",
    )
    parser.add_argument(
        "--order",
        choices=("seeds", "rows"),
        default="seeds",
        help="seeds (default): every row at seed 0, then every row at seed 1, ..., so that a "
        "partial table has every row; rows: every seed of the first row, then of the next, so "
        "that a row reaches the 5 seeds of a claim soonest",
    )
    parser.add_argument(
        "--quick", action="store_true", help="CLIP and SILC-C unless --rows, 1 seed, a few steps"
    )
    parser.add_argument("--worker", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from keras_silc.experiments import fashion as demo

    if args.quick:
        args.rows, args.seeds = args.rows or "clip,silc_c", args.seeds or "0"
        args.steps, args.batch_size = args.steps or 4, args.batch_size or 8
        args.num_scenes, args.eval_items, args.eval_scenes = 128, 100, 40
    args.steps = args.steps or TABLE_STEPS
    args.batch_size = args.batch_size or demo.DEMO_BATCH

    if args.worker:
        result = train_and_evaluate(args.worker, args.seed, args)  # makes args.output
        with open(run_path(args, args.worker, args.seed), "w") as handle:
            json.dump(result, handle, indent=1, default=str)
        return

    rows = [r.strip() for r in (args.rows or ",".join(ROWS)).split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    start = time.time()
    if args.no_train:
        runs, missing = load_records(args, rows, args.seeds)
    else:
        seeds = [int(s) for s in (args.seeds or "0,1,2").split(",")]
        order = run_order(rows, seeds, args.order)
        reuse_runs(args, order)
        for row, seed in order:
            if os.path.exists(run_path(args, row, seed)):
                check_settings(run_path(args, row, seed), args)
        run_queue(args, [key for key in order if not os.path.exists(run_path(args, *key))])
        runs = [check_settings(run_path(args, row, seed), args) for row, seed in order]
        missing = {}
    for run in runs:
        print(
            f"[table6] {run['row']} seed {run['seed']}: "
            + ", ".join(f"{METRICS[k]} {100 * run['results'][k]:.1f}" for k in METRICS)
            + teacher_summary(run)
            + f" ({run['train_seconds']:.0f} s training)",
            flush=True,
        )
    text = markdown(summarize(runs, rows), runs, args, time.time() - start, missing, rows)
    print()
    print(text)
    if args.table:
        with open(args.table, "w") as handle:
            handle.write(text)


def load_records(args, rows, seeds=None):
    """The finished runs of `rows` that --output holds (settings checked), without training,
    and the missing (row, seed) cells ({row: [seeds]}). `seeds` ("0,1,2"; default: every
    seed that some run in the folder has)."""
    if not os.path.isdir(args.output):
        raise SystemExit(f"--no-train: no such folder {args.output}.")
    if seeds is None:
        found = set()
        for name in os.listdir(args.output):
            stem, _, tail = name.rpartition("-seed")
            if stem in ROWS and tail.endswith(".json") and tail[:-5].isdigit():
                found.add(int(tail[:-5]))
        seeds = sorted(found)
    else:
        seeds = [int(s) for s in seeds.split(",")]
    runs = [
        check_settings(run_path(args, row, seed), args)
        for seed in seeds
        for row in rows
        if os.path.exists(run_path(args, row, seed))
    ]
    return runs, missing_cells(runs, rows, seeds)


if __name__ == "__main__":
    main()
