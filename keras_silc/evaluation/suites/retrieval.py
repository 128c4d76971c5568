"""Retrieval suites: COCO (Karpathy 5k test split) and Flickr30k (Karpathy 1k test split).

Image -> text and text -> image Recall@1/5/10 with every caption of every test image (the first
5 per image by default, the protocol's 25,000 COCO and 5,000 Flickr30k captions), computed by
`keras_silc.evaluation.retrieval`: an image query is a hit at K when any of its captions is
among the K most similar captions; a caption query when its image is among the K most similar
images.

Where the data is looked for (`data_dir` = DIR), in this order (`source="auto"`):

- COCO: DIR/coco/dataset_coco.json (Karpathy's caption_datasets.zip) with the images at
  DIR/coco/<filepath>/<filename> (val2014/COCO_val2014_....jpg) or DIR/coco/images/...; else
  TFDS `coco_captions` split "test" (TFDS's copy of the same Karpathy split).
- Flickr30k: DIR/flickr30k/dataset_flickr30k.json with the images in
  DIR/flickr30k/flickr30k-images/, DIR/flickr30k/images/ or DIR/flickr30k/.
"""

import dataclasses
import os
import time

from keras_silc.evaluation.common import image_size
from keras_silc.evaluation.retrieval import retrieval
from keras_silc.evaluation.suites import data


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    title: str
    json_files: tuple  # Karpathy JSON candidates under data_dir
    image_roots: tuple  # image folder candidates under data_dir
    tfds_name: str | None
    how_to: str
    split: str = "test"


COCO = RetrievalSet(
    title="COCO Karpathy 5k test",
    json_files=("coco/dataset_coco.json", "coco/annotations/dataset_coco.json"),
    image_roots=("coco", "coco/images"),
    tfds_name="coco_captions",
    how_to=(
        "put dataset_coco.json from Karpathy's caption_datasets.zip "
        "(https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) in "
        "DIR/coco/ and the COCO 2014 images (val2014/ holds the test split; "
        "https://cocodataset.org) in DIR/coco/val2014/; or run "
        "`tfds build coco_captions --data_dir DIR`."
    ),
)
FLICKR30K = RetrievalSet(
    title="Flickr30k Karpathy 1k test",
    json_files=("flickr30k/dataset_flickr30k.json",),
    image_roots=("flickr30k/flickr30k-images", "flickr30k/images", "flickr30k"),
    tfds_name=None,
    how_to=(
        "put dataset_flickr30k.json from Karpathy's caption_datasets.zip "
        "(https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) in "
        "DIR/flickr30k/ and the Flickr30k images (by request: "
        "https://shannon.cs.illinois.edu/DenotationGraph/) in DIR/flickr30k/flickr30k-images/."
    ),
)


def _karpathy(spec, data_dir, json_path, max_captions):
    entries = data.read_karpathy(json_path, spec.split, max_captions)
    first = entries[0][0]
    roots = [os.path.join(data_dir, root) for root in spec.image_roots]
    root = next((r for r in roots if os.path.isfile(os.path.join(r, first))), None)
    if root is None:
        raise data.NotFound(
            f"The images of {json_path}",
            [os.path.join(r, first) for r in roots],
            spec.how_to.replace("DIR", data_dir),
        )
    paths = [os.path.join(root, relative) for relative, _ in entries]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} {spec.split} images of {json_path} are not "
            f"in {root}, e.g. {missing[:3]}. Complete the image folder."
        )
    captions = [c for _, c in entries]
    located = data.Located(
        f"karpathy:{json_path}",
        len(paths),
        lambda size, resize: data.caption_dataset(paths, captions, size, resize),
    )
    return located, captions


def locate(spec, data_dir, source="auto", max_captions=5):
    """(`Located` data of `spec`, captions per image or None when unknown), else NotFound."""
    data_dir = data.check_data_dir(data_dir)
    data.check_source(source)
    looked = []
    if source in ("auto", "folder"):
        json_path = data.first_existing(data_dir, spec.json_files)
        if json_path is not None:
            return _karpathy(spec, data_dir, json_path, max_captions)
        looked += [os.path.join(data_dir, name) for name in spec.json_files]
    if source in ("auto", "tfds") and spec.tfds_name is not None:
        try:
            dataset, count, name = data.tfds_dataset(spec.tfds_name, spec.split, data_dir)
        except LookupError as error:
            looked.append(str(error.args[0]))
        else:
            located = data.Located(
                name,
                count,
                lambda size, resize: data.tfds_caption_dataset(dataset, size, resize, max_captions),
            )
            return located, None
    if source == "tfds" and spec.tfds_name is None:
        raise ValueError(f"TFDS has no {spec.title}; use source='folder' or 'auto'.")
    raise data.NotFound(spec.title, looked, spec.how_to.replace("DIR", data_dir))


def check_max_captions(max_captions):
    if max_captions is not None and (
        isinstance(max_captions, bool) or not isinstance(max_captions, int) or max_captions < 1
    ):
        raise ValueError(f"max_captions must be None or a positive int, got {max_captions!r}.")
    return max_captions


def run_retrieval(
    spec,
    model,
    data_dir,
    *,
    tokenizer=None,
    batch_size=256,
    max_examples=None,
    output_dir=None,
    verbose=1,
    resize="squash",
    source="auto",
    max_captions=5,
):
    """The retrieval report of one `RetrievalSet` (see the module docstring)."""
    del output_dir  # no pictures
    data.check_resize(resize)
    data.check_max_examples(max_examples)
    check_max_captions(max_captions)
    located, captions = locate(spec, data_dir, source, max_captions)
    size = image_size(model)
    dataset = located.build(size, resize)
    count = located.count
    if count is not None:
        dataset, count = data.finish(dataset, count, max_examples)
    elif max_examples is not None:
        dataset = dataset.take(max_examples)
    num_captions = None
    if captions is not None:
        num_captions = sum(len(c) for c in captions[: count or len(captions)])
    start = time.time()
    metrics = retrieval(
        model,
        tokenizer,
        dataset,
        ks=(1, 5, 10),
        batch_size=batch_size,
        verbose=bool(verbose),
    )
    seconds = time.time() - start
    return {
        "task": "image-text retrieval",
        "data": spec.title,
        "metrics": metrics,
        "settings": {
            "source": located.source,
            "split": spec.split,
            "num_images": count,
            "num_captions": num_captions,
            "max_captions": max_captions,
            "max_examples": max_examples,
            "image_size": size,
            "resize": resize,
            "batch_size": batch_size,
        },
        "seconds": round(seconds, 2),
    }


_ARGS = """

    Args:
        model: a two-tower model (`SilcModel`, a converted keras-hub SigLIP / CLIP).
        data_dir: the folder that holds the data sets (see the module docstring).
        tokenizer: None for the model's own.
        batch_size: images (and captions) per model call.
        max_examples: evaluate only the first N images and their captions (a quick check).
        output_dir: unused (no pictures).
        verbose: progress bars when truthy.
        resize: "squash" (big_vision's bilinear resize to the model's size) or
            "center_crop" (CLIP / open_clip: the shorter side bicubic, then a central crop).
        source: "auto" (the Karpathy JSON, else TFDS), "folder" or "tfds".
        max_captions: captions per image (the first N; None: all of them).

    Returns:
        {"task", "data", "metrics": {"i2t_recall@K", "t2i_recall@K"}, "settings", "seconds"}.
    """


def _suite(spec, doc):
    def run(
        model,
        data_dir,
        *,
        tokenizer=None,
        batch_size=256,
        max_examples=None,
        output_dir=None,
        verbose=1,
        resize="squash",
        source="auto",
        max_captions=5,
    ):
        return run_retrieval(
            spec,
            model,
            data_dir,
            tokenizer=tokenizer,
            batch_size=batch_size,
            max_examples=max_examples,
            output_dir=output_dir,
            verbose=verbose,
            resize=resize,
            source=source,
            max_captions=max_captions,
        )

    run.__doc__ = doc + _ARGS
    run.locate = lambda data_dir, source="auto": locate(spec, data_dir, source)[0]
    return run


run_coco = _suite(COCO, "Image-text Recall@1/5/10 both ways on COCO's Karpathy 5k test split.")
run_flickr30k = _suite(
    FLICKR30K, "Image-text Recall@1/5/10 both ways on Flickr30k's Karpathy 1k test split."
)
