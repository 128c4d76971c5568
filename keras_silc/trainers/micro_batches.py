"""GradCache for `SilcModel(gradient_accumulation_steps=M)`: the full-batch step in
micro-batches, shared by the backend trainers.

(1) Embed every micro-batch without gradients; (2) the contrastive loss of the whole batch
and its gradient with respect to the embeddings; (3) per micro-batch, backpropagate those
embedding gradients and the micro-batch's share of the distillation loss through the towers,
summing the weight gradients (Gao et al. 2021).
"""

from keras import ops


class MicroBatches:
    def split_micro_batches(self, batch):
        """The batch's entries as (M, B / M, ...) arrays. Micro-batch j holds examples
        j, j + M, j + 2M, ...: strided, so that each device's shard of a data-parallel
        batch feeds every micro-batch equally."""
        steps = self.gradient_accumulation_steps
        micro = {}
        for key in self.required_keys():
            value = batch[key]
            size = value.shape[0]
            if size is not None and size % steps:
                raise ValueError(
                    f"gradient_accumulation_steps={steps} must divide the batch size, but "
                    f"batch['{key}'] has {size} examples. Use a batch size that is a multiple "
                    f"of {steps}, or another gradient_accumulation_steps."
                )
            value = ops.reshape(value, (-1, steps) + tuple(value.shape[1:]))
            micro[key] = ops.moveaxis(value, 1, 0)
        return micro

    def micro_batch_embeddings(self, micro_batches):
        """Step (1): (M * b, V, J) image and (M * b, J) text embeddings, micro-batch
        by micro-batch, in micro-batch order. Call without recording gradients."""

        def embed(micro):
            image_embeddings, text_embeddings = self.contrastive_embeddings(micro)
            return ops.stop_gradient(image_embeddings), ops.stop_gradient(text_embeddings)

        image_embeddings, text_embeddings = ops.map(embed, micro_batches)
        image_embeddings = ops.reshape(image_embeddings, (-1,) + tuple(image_embeddings.shape[2:]))
        text_embeddings = ops.reshape(text_embeddings, (-1,) + tuple(text_embeddings.shape[2:]))
        return image_embeddings, text_embeddings

    def micro_batch_objective(self, micro, image_gradients, text_gradients):
        """Step (3): a scalar whose gradient with respect to the weights is micro-batch
        j's share of the full-batch gradient: the embeddings dotted with the
        (constant) gradients of the full contrastive loss with respect to them, plus
        1 / M of the micro-batch's distillation loss. Returns (objective, aux)."""
        image_embeddings, text_embeddings = self.contrastive_embeddings(micro)
        objective = sum(
            ops.sum(ops.cast(value, "float32") * ops.cast(ops.stop_gradient(grad), "float32"))
            for value, grad in (
                (image_embeddings, image_gradients),
                (text_embeddings, text_gradients),
            )
        )
        aux = {}
        if self.self_distillation:
            aux = self.distillation_terms(micro)
            weight = self.distillation_weight / self.gradient_accumulation_steps
            objective = objective + weight * aux["distillation_loss"]
        return objective, aux

    def combine_micro_batch_aux(self, contrastive_aux, micro_aux):
        """The full-batch aux from the contrastive terms and the (M, ...) stacked
        micro-batch terms, which are means over equal micro-batches."""
        aux = dict(contrastive_aux)
        aux.update({key: ops.mean(value, axis=0) for key, value in micro_aux.items()})
        total = aux["contrastive_loss"]
        if self.self_distillation:
            total = total + self.distillation_weight * aux["distillation_loss"]
        aux["loss"] = total
        return aux

    def contrastive_variables(self):
        """The weights that only the contrastive loss of the whole batch touches."""
        return [self.log_logit_scale] + ([self.logit_bias] if self.logit_bias is not None else [])
