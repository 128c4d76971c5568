"""PyTorch: autograd backward, then the optimizer and state updates under no_grad."""

import torch

from keras_silc.distribution import check_distribution_support
from keras_silc.trainers.common import TrainerCommon
from keras_silc.trainers.common import apply_optimizer
from keras_silc.trainers.micro_batches import MicroBatches


class TorchSilcTrainer(MicroBatches, TrainerCommon):
    def train_step(self, data):
        check_distribution_support()  # refuse replica-local negatives and centers
        batch = self.prepare_batch(data)
        self.zero_grad()
        if self.gradient_accumulation_steps > 1:
            aux = self._accumulate_gradients(batch)
        else:
            _, aux = self.compute_losses(batch)
            self.optimizer.scale_loss(aux["loss"]).backward()
        trainable = self.trainable_variables
        grads = [v.value.grad for v in trainable]
        with torch.no_grad():
            apply_optimizer(self.optimizer, grads, trainable, self.learning_rate_scales())
            return self.update_state_after_step(aux)

    def _accumulate_gradients(self, batch):
        """The full batch's gradients in micro-batches (see `SilcModel`), left in `.grad`."""
        micro = self.split_micro_batches(batch)
        with torch.no_grad():
            image_embeddings, text_embeddings = self.micro_batch_embeddings(micro)
        image_embeddings.requires_grad_(True)
        text_embeddings.requires_grad_(True)
        contrastive, contrastive_aux = self.contrastive_terms(image_embeddings, text_embeddings)
        image_grads, text_grads = torch.autograd.grad(
            contrastive, [image_embeddings, text_embeddings], retain_graph=True
        )
        self.optimizer.scale_loss(contrastive).backward()  # the temperature's (and bias's) share
        steps = self.gradient_accumulation_steps
        image_grads = image_grads.reshape((steps, -1) + tuple(image_grads.shape[1:]))
        text_grads = text_grads.reshape((steps, -1) + tuple(text_grads.shape[1:]))
        micro_aux = []
        for j in range(steps):
            objective, aux = self.micro_batch_objective(
                {key: value[j] for key, value in micro.items()}, image_grads[j], text_grads[j]
            )
            self.optimizer.scale_loss(objective).backward()
            micro_aux.append({key: value.detach() for key, value in aux.items()})
        stacked = {key: torch.stack([aux[key] for aux in micro_aux]) for key in micro_aux[0]}
        contrastive_aux = {key: value.detach() for key, value in contrastive_aux.items()}
        return self.combine_micro_batch_aux(contrastive_aux, stacked)

    def test_step(self, data):
        batch = self.prepare_batch(data)
        with torch.no_grad():
            _, aux = self.compute_losses(batch, training=False)
            return self.update_metrics(aux)
