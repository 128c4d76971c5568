"""Training and evaluating on Fashion-MNIST scenes: the main job, the demo and the reports.

`train_run` is what `keras-silc train` does: a preset plus overrides, a data source, a
tokenizer, `fit_with_checkpoints` (resumable), then the evaluation suite. `evaluate_fashion`
runs the paper's four evaluations on the Fashion-MNIST test split: zero-shot classification
(single items), few-shot linear probes, retrieval and zero-shot segmentation (scenes).
"""

import json
import os
import time

# Prompt templates for Fashion items, in big_vision's style (averaged per class).
FASHION_TEMPLATES = (
    "a {}.",
    "a photo of a {}.",
    "there is a {}.",
    "a picture with a {}.",
    "a {} in the center.",
)

# A 64 px model small enough for a CPU (patch 8: 64 patches, 4 x 32 px local crops). Its
# head has batch norm: without it, at this size and length of run, the head maps every image
# to the same point and the distillation teaches nothing (docs/results.md).
DEMO_OVERRIDES = {
    "vision": {"image_size": 64, "patch_size": 8, "width": 96, "depth": 3, "num_heads": 4},
    "text": {"max_length": 40, "width": 96, "depth": 2, "num_heads": 4, "output_dim": 96},
    "head": {"num_prototypes": 1024, "hidden_dim": 384, "bottleneck_dim": 96, "batch_norm": True},
    "num_local_crops": 4,
    "local_crop_size": 32,
}

# The demo's run: steps of a batch, about 8 minutes of training on a 2-core CPU under PyTorch
# (38,400 examples: 32% zero-shot top-1 against 14% at 300 steps of 32; docs/results.md).
DEMO_STEPS = 600
DEMO_BATCH = 64
# Captions that name only the classes: with colour and position words a model this small
# learns the shortcut and not the classes (docs/results.md).
DEMO_CLASS_ONLY_CAPTIONS = 1.0


def recipe_for(steps, learning_rate=None):
    """The schedule of a short run: linear warmup over 10% of the steps, rsqrt decay, linear
    cooldown over the last 20% (the paper's recipe shape, scaled to `steps`)."""
    warmup = min(max(1, steps // 10), steps // 2)  # a 1-step run has no room for both
    recipe = {
        "warmup_steps": warmup,
        "cooldown_steps": min(max(1, steps // 5), steps - warmup),
        "total_steps": steps,
    }
    if learning_rate is not None:
        recipe["learning_rate"] = learning_rate
    return recipe


# Caption colours are part of the text: no hue or saturation jitter on the captioned views.
# The local crops, never compared with text, get any hue (a full turn) and saturation jitter.
FASHION_AUGMENTATION = {
    "hue": 0.0,
    "saturation": 0.0,
    "local_hue": 0.5,
    "local_saturation": 0.4,
    "global_blur_probabilities": (0.5, 0.1),
    "solarize_probabilities": (0.0,),
}


def make_pairs(
    source,
    path=None,
    image_key=None,
    caption_key=None,
    num_scenes=20_000,
    seed=0,
    class_only_captions=0.0,
    tokenizer_sample=None,
):
    """(pairs dataset, the captions a vocabulary is trained on) for a `--data` choice.

    `class_only_captions`: the fraction of Fashion scenes captioned with class names only
    (see `fashion_scenes`). `tokenizer_sample`: how many captions to return, the first in
    the source's order for `seed` (default `own_data.TOKENIZER_SAMPLE`).
    """
    from keras_silc import data
    from keras_silc.experiments import own_data

    count = own_data.TOKENIZER_SAMPLE if tokenizer_sample is None else tokenizer_sample
    if source == "fashion_scenes":
        scenes = data.fashion_scenes(
            "train", num_scenes, 64, seed=seed, class_only_captions=class_only_captions
        )
        pairs = data.from_arrays(scenes["image"], scenes["caption"])
        return pairs, list(scenes["caption"])[:count]
    if path is None:
        raise ValueError(f"--data {source} needs --data-path (a file, glob or dataset name).")
    pairs = own_data.read_pairs(source, path, image_key, caption_key, seed=seed)
    captions = own_data.caption_sample(pairs, count)
    if not captions:
        raise ValueError(f"No captions found in {path!r}.")
    return pairs, captions


# ------------------------------------------------------------------ evaluation
def evaluate_fashion(model, tokenizer=None, num_items=2000, num_scenes=500, shots=(1, 5, 10)):
    """The four evaluations on the Fashion-MNIST test split; a flat dict of floats."""
    from keras_silc import data
    from keras_silc import evaluation

    tokenizer = tokenizer or model.tokenizer
    size = model.vision_config.get("image_size", 64)
    items = data.fashion_items("test", num_items, size, seed=0)
    train_items = data.fashion_items("train", 50 * 10, size, seed=1)
    scenes = data.fashion_scenes("test", num_scenes, size, num_captions=2, seed=0)
    classes = data.FASHION_CLASSES
    results = {}
    zero_shot = evaluation.zero_shot_classification(
        model, tokenizer, items["image"], items["label"], classes, templates=FASHION_TEMPLATES
    )
    results.update({f"zero_shot/{k}": v for k, v in zero_shot.items()})
    few_shot = evaluation.few_shot_classification(
        model,
        train_items["image"],
        train_items["label"],
        items["image"],
        items["label"],
        shots=shots,
        seeds=3,
    )
    results.update({f"few_shot/{k}": v for k, v in few_shot.items()})
    retrieval = evaluation.retrieval(model, tokenizer, scenes["image"], scenes["caption"])
    results.update({f"retrieval/{k}": v for k, v in retrieval.items()})
    segmentation = evaluation.zero_shot_segmentation(
        model, tokenizer, scenes["image"], scenes["mask"], classes, templates=FASHION_TEMPLATES
    )
    results.update({f"segmentation/{k}": v for k, v in segmentation.items()})
    return results


def headline(results):
    """The few numbers a reader looks at first."""
    keys = [
        "zero_shot/top1",
        "few_shot/10shot_mean",
        "retrieval/i2t_recall@1",
        "retrieval/t2i_recall@1",
        "segmentation/miou",
    ]
    return {k: results[k] for k in keys if k in results}


def write_report(model, results, history, output_dir, tokenizer=None, seconds=None, extra=None):
    """report.json, report.md, segmentation overlays and loss curves under output_dir."""
    from keras_silc import data
    from keras_silc import evaluation

    os.makedirs(output_dir, exist_ok=True)
    tokenizer = tokenizer or model.tokenizer
    size = model.vision_config.get("image_size", 64)
    scenes = data.fashion_scenes("test", 8, size, seed=3)
    predictions = evaluation.segment(
        model, tokenizer, scenes["image"], data.FASHION_CLASSES, templates=FASHION_TEMPLATES
    )
    pictures = {
        "segmentation": evaluation.plot_segmentation(
            scenes["image"],
            predictions,
            scenes["mask"],
            data.FASHION_CLASSES,
            os.path.join(output_dir, "segmentation.png"),
            captions=list(scenes["caption"]),
        )
    }
    if history:
        pictures["curves"] = evaluation.plot_metrics(
            history, os.path.join(output_dir, "curves.png")
        )
    report = {
        "results": results,
        "headline": headline(results),
        "seconds": seconds,
        "pictures": {k: os.path.basename(v) for k, v in pictures.items()},
        **(extra or {}),
    }
    with open(os.path.join(output_dir, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2, default=float)
    lines = ["# keras-silc report", ""]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    if seconds is not None:
        lines.append(f"- training time: {seconds:.0f} s")
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in results.items()]
    lines += ["", "![segmentation](segmentation.png)"]
    if "curves" in pictures:
        lines.append("![curves](curves.png)")
    with open(os.path.join(output_dir, "report.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return report


def print_table(results, out=print):
    width = max(len(k) for k in results)
    for key, value in results.items():
        out(f"{key:<{width}}  {value:.4f}")


def timed(fn):
    start = time.time()
    value = fn()
    return value, time.time() - start
