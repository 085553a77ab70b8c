"""The tiny run config of the ``cfcl run`` tests, on one process and on several."""

QUIET = {"progress_bar": False, "log_every_n_steps": 1}
# A whole run in a few minutes on a CPU: a small synthetic store, one-epoch generator and classifiers, tiny encoders.
TINY_RUN = {
    "methods": ["simclr", "cf-simclr", "oracle"],
    "seeds": [0],
    "trainer": QUIET,
    "data": {
        "source": "synth",
        "synth": {
            "image_size": 32,
            "n_train": 96,
            "n_val": 48,
            "n_test": 64,
            "n_ood_train": 48,
            "n_ood_test": 48,
        },
    },
    "generator": {
        "arch": {"widths": [8, 8, 16], "blocks": [1, 1, 1], "latent_channels": 4, "stochastic_max_res": 8},
        "batch_size": 16,
        "val_images": 8,
        "grid_images": 4,
        "trainer": {"max_epochs": 1},
    },
    "guide": {"trainer": {"max_epochs": 1}, "arch_kwargs": {"widths": [4, 8]}},
    "judge": {"trainer": {"max_epochs": 1}, "arch_kwargs": {"width": 4, "blocks": [1]}},
    "finetune": {
        "enabled": True,
        "config": {"batch_size": 16, "bound_batches": 2, "grid_images": 4, "trainer": {"max_epochs": 1}},
    },
    "cf_store": {"progress_bar": False},
    "cf_quality": {"n_per_domain": 4, "null_steps": 2},
    "pretrain": {
        "batch_size": 16,
        "projection": [8],
        "online_probe": False,
        "encoder": {"arch": "small", "arch_kwargs": {"width": 4, "blocks": [1], "stem_stride": 2}},
        "trainer": {"max_epochs": 2},
    },
    "evaluate": {
        "label_fractions": [0.5, 1.0],
        "seeds": [0],
        "n_boot": 10,
        "finetune": {"enabled": False, "supervised": False},
        "embeddings": {"per_domain": 10, "folds": 2, "tsne_points": 20, "perplexity": 5},
    },
}
