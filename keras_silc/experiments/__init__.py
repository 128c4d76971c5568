"""The project's own experiments, apart from the library: the Fashion-MNIST demo
(`keras-silc demo`) and the paper's Table 6 ablation rows. The library (models, layers,
losses, data, evaluation) never imports this package."""

from keras_silc.experiments.ablation import TABLE6_ROWS

__all__ = ["TABLE6_ROWS"]
