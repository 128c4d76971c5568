"""keras_silc: SILC (arXiv 2310.13355) for Keras 3 on JAX, TensorFlow and PyTorch."""

from keras_silc import losses
from keras_silc.data.preprocessor import SilcPreprocessor
from keras_silc.models.image_features import ImageFeatureExtractor
from keras_silc.models.image_tower import ImageTower
from keras_silc.models.presets import PRESETS
from keras_silc.models.silc_model import SilcModel
from keras_silc.models.text_encoder import TextEncoder
from keras_silc.models.vision_encoder import VisionEncoder
from keras_silc.optimizers import RsqrtSchedule
from keras_silc.optimizers import paper_optimizer
from keras_silc.version import __version__

__all__ = [
    "ImageFeatureExtractor",
    "ImageTower",
    "PRESETS",
    "RsqrtSchedule",
    "SilcModel",
    "SilcPreprocessor",
    "TextEncoder",
    "VisionEncoder",
    "__version__",
    "losses",
    "paper_optimizer",
]
