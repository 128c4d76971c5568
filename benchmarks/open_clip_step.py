"""open_clip's CLIP training step at a given geometry, for `train_step.py` to compare against.

Runs in its own environment (open-clip-torch needs torchvision); see benchmarks/README.md.
Prints one JSON line: {"images_per_s": ..., "seconds_per_step": ..., "torch": ...}.
"""

import argparse
import json
import time

import open_clip
import torch
from open_clip.loss import ClipLoss


def main():
    parser = argparse.ArgumentParser()
    for name in (
        "image-size",
        "patch-size",
        "width",
        "depth",
        "heads",
        "text-width",
        "text-depth",
        "text-heads",
        "context-length",
        "vocab-size",
        "embed-dim",
        "batch-size",
        "steps",
        "warmup",
    ):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=args.embed_dim,
        vision_cfg={
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "width": args.width,
            "layers": args.depth,
            "head_width": args.width // args.heads,
            "mlp_ratio": 4.0,
        },
        text_cfg={
            "context_length": args.context_length,
            "vocab_size": args.vocab_size,
            "width": args.text_width,
            "heads": args.text_heads,
            "layers": args.text_depth,
        },
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-4)
    loss_fn = ClipLoss()
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size)
    text = torch.randint(1, args.vocab_size, (args.batch_size, args.context_length))

    def step():
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = model(images, text)
        loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(loss)

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(
        json.dumps(
            {
                "images_per_s": args.batch_size / seconds,
                "seconds_per_step": seconds,
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
