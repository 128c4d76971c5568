"""Input pipelines: image-text sources, multi-crop augmentation, tokenizer, datasets."""

from keras_silc.data.augment import MultiCropConfig
from keras_silc.data.augment import multi_crop_views
from keras_silc.data.fashion_scenes import FASHION_CLASSES
from keras_silc.data.fashion_scenes import fashion_items
from keras_silc.data.fashion_scenes import fashion_scenes
from keras_silc.data.fashion_scenes import load_fashion_mnist
from keras_silc.data.pipeline import evaluation_arrays
from keras_silc.data.pipeline import training_dataset
from keras_silc.data.preprocessor import SilcPreprocessor
from keras_silc.data.sources import from_arrays
from keras_silc.data.sources import from_csv
from keras_silc.data.sources import from_tfds
from keras_silc.data.sources import from_tfrecord
from keras_silc.data.sources import from_webdataset
from keras_silc.data.sources import list_files
from keras_silc.data.sources import write_webdataset
from keras_silc.data.stats import DataStats
from keras_silc.data.stats import DataStatsCallback
from keras_silc.data.tokenizer import SilcTokenizer

__all__ = [
    "FASHION_CLASSES",
    "SilcPreprocessor",
    "SilcTokenizer",
    "fashion_items",
    "fashion_scenes",
    "load_fashion_mnist",
    "DataStats",
    "DataStatsCallback",
    "evaluation_arrays",
    "MultiCropConfig",
    "from_arrays",
    "from_csv",
    "from_tfds",
    "from_tfrecord",
    "from_webdataset",
    "list_files",
    "multi_crop_views",
    "training_dataset",
    "write_webdataset",
]
