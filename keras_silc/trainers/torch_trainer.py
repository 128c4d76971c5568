"""PyTorch: autograd backward, then the optimizer and state updates under no_grad."""

import torch

from keras_silc.distribution import check_distribution_support
from keras_silc.trainers.common import unpack_batch


class TorchSilcTrainer:
    def train_step(self, data):
        check_distribution_support()  # refuse replica-local negatives and centers
        batch = unpack_batch(data)
        self.validate_batch(batch)
        self.zero_grad()
        _, aux = self.compute_losses(batch)
        self.optimizer.scale_loss(aux["loss"]).backward()
        trainable = self.trainable_variables
        grads = [v.value.grad for v in trainable]
        with torch.no_grad():
            self.optimizer.apply(grads, trainable)
            return self.update_state_after_step(aux)

    def test_step(self, data):
        batch = unpack_batch(data)
        self.validate_batch(batch)
        with torch.no_grad():
            _, aux = self.compute_losses(batch)
            return self.update_metrics(aux)
