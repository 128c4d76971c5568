"""The paper's evaluations of a SILC model, numpy in, dicts of Python floats out.

- `zero_shot_classification`: prompt-ensembled zero-shot top-k accuracy (big_vision's
  discriminative classifier);
- `few_shot_classification`: closed-form ridge regression on frozen image embeddings, several
  shot counts and seeds (big_vision's `fewshot_lsr`);
- `retrieval`: image->text and text->image Recall@K with several captions per image (big_vision's
  retrieval evaluators);
- `zero_shot_segmentation`: dense features from the MAP head's value path against class text
  embeddings, mIoU without background, no post-refinement (the paper's section 4.3);
- `distillation_diagnostics`: whether the self-distillation head has collapsed (uniform or
  dominant), on a set of images;
- `EvaluationCallback`: any of them during `fit`, into History and TensorBoard;
- `plot_segmentation`, `plot_metrics`: PNG pictures;
- `run_suites`: the paper's benchmarks on their data sets (ImageNet, CIFAR, COCO, Flickr30k,
  the segmentation sets) as named suites (`keras_silc.evaluation.suites.SUITES`), one report.

Every evaluator takes arrays (uint8 or [0, 1] float images, resized to the model's input size)
or a source of dict batches (a dict of arrays, a `tf.data.Dataset`, an iterable).
"""

from keras_silc.evaluation.callback import EvaluationCallback
from keras_silc.evaluation.common import as_float_images
from keras_silc.evaluation.common import embed_images
from keras_silc.evaluation.common import embed_texts
from keras_silc.evaluation.distillation import distillation_diagnostics
from keras_silc.evaluation.few_shot import few_shot_classification
from keras_silc.evaluation.few_shot import fewshot_accuracy
from keras_silc.evaluation.few_shot import fit_ridge
from keras_silc.evaluation.few_shot import predict_ridge
from keras_silc.evaluation.few_shot import sample_shots
from keras_silc.evaluation.plots import palette
from keras_silc.evaluation.plots import plot_metrics
from keras_silc.evaluation.plots import plot_segmentation
from keras_silc.evaluation.retrieval import recall_at_k
from keras_silc.evaluation.retrieval import retrieval
from keras_silc.evaluation.segmentation import confusion_matrix
from keras_silc.evaluation.segmentation import iou_from_confusion
from keras_silc.evaluation.segmentation import segment
from keras_silc.evaluation.segmentation import zero_shot_segmentation
from keras_silc.evaluation.suites.runner import run_suites
from keras_silc.evaluation.zero_shot import DEFAULT_TEMPLATES
from keras_silc.evaluation.zero_shot import class_embeddings
from keras_silc.evaluation.zero_shot import zero_shot_classification

__all__ = [
    "DEFAULT_TEMPLATES",
    "EvaluationCallback",
    "as_float_images",
    "class_embeddings",
    "confusion_matrix",
    "distillation_diagnostics",
    "embed_images",
    "embed_texts",
    "few_shot_classification",
    "fewshot_accuracy",
    "fit_ridge",
    "iou_from_confusion",
    "palette",
    "plot_metrics",
    "plot_segmentation",
    "predict_ridge",
    "recall_at_k",
    "retrieval",
    "run_suites",
    "sample_shots",
    "segment",
    "zero_shot_classification",
    "zero_shot_segmentation",
]
