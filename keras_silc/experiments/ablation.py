"""The rows of the paper's Table 6 as `SilcModel` constructor switches."""

TABLE6_ROWS = {
    "clip": {"multi_view_contrastive": False, "ema_teacher": False, "self_distillation": False},
    "clip+views": {
        "multi_view_contrastive": True,
        "ema_teacher": False,
        "self_distillation": False,
    },
    "clip+views+ema": {
        "multi_view_contrastive": True,
        "ema_teacher": True,
        "self_distillation": False,
        "inference_tower": "teacher",
    },
    "silc": {
        "multi_view_contrastive": True,
        "ema_teacher": True,
        "self_distillation": True,
        "inference_tower": "teacher",
    },
}
