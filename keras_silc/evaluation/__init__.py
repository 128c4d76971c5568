"""The paper's evaluations: zero-shot and few-shot classification, retrieval, segmentation."""

from keras_silc.evaluation.callback import EvaluationCallback
from keras_silc.evaluation.few_shot import few_shot_classification
from keras_silc.evaluation.few_shot import fit_ridge
from keras_silc.evaluation.few_shot import predict_ridge
from keras_silc.evaluation.plots import plot_metrics
from keras_silc.evaluation.plots import plot_segmentation
from keras_silc.evaluation.retrieval import recall_at_k
from keras_silc.evaluation.retrieval import retrieval
from keras_silc.evaluation.segmentation import confusion_matrix
from keras_silc.evaluation.segmentation import iou_from_confusion
from keras_silc.evaluation.segmentation import segment
from keras_silc.evaluation.segmentation import zero_shot_segmentation
from keras_silc.evaluation.zero_shot import DEFAULT_TEMPLATES
from keras_silc.evaluation.zero_shot import class_embeddings
from keras_silc.evaluation.zero_shot import zero_shot_classification

__all__ = [
    "DEFAULT_TEMPLATES",
    "EvaluationCallback",
    "class_embeddings",
    "confusion_matrix",
    "few_shot_classification",
    "fit_ridge",
    "iou_from_confusion",
    "plot_metrics",
    "plot_segmentation",
    "predict_ridge",
    "recall_at_k",
    "retrieval",
    "segment",
    "zero_shot_classification",
    "zero_shot_segmentation",
]
