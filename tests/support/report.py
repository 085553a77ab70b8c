"""A counterfactual quality summary for the report tests."""

# A cf_quality.json as `cfcl cf evaluate` writes it (scanners major, rare and the held-out ood), with the
# tiny values and nested records a real one has.
QUALITY = {
    "domains": ["major", "rare", "ood"],
    "evaluated_domains": ["major", "rare"],
    "rare_domain": "rare",
    "splits": ["test"],
    "n_images": {"major": 32, "rare": 32},
    "generator": {"guide": "956c9a94c082cb02", "kind": "model", "path": "/runs/demo/cf_finetune/generator.pt"},
    "judge": {
        "arch": "small",
        "path": "/runs/demo/cf_judge/classifier.pt",
        "role": "judge",
        "seed": 2,
        "val_balanced_accuracy": 0.987654321,
    },
    "effectiveness": {
        "auroc": {"major": 0.9912345, "rare": 0.97},
        "auroc_macro": 0.98061725,
        "balanced_accuracy": 0.953125,
        "confusion": {"labels": ["major", "rare", "ood"], "matrix": [[0, 29, 3], [32, 0, 0], [0, 0, 0]]},
    },
    "pairs": [
        {
            "judge_accuracy": 0.90625,
            "mae_cf": 0.0857982411980629,
            "mae_identity": 0.2765634655952453,
            "n": 32,
            "pair": "major->rare",
            "ratio": 0.310230,
            "reversibility": 1.195697318934208e-09,
            "source": 0,
            "target": 1,
        },
        {
            "judge_accuracy": 1.0,
            "mae_cf": 0.09123,
            "mae_identity": 0.2611,
            "n": 32,
            "pair": "rare->major",
            "ratio": 0.3494,
            "reversibility": 0.0012,
            "source": 1,
            "target": 0,
        },
    ],
    "composition": {
        "mae_1": 1.268241067720055e-08,
        "mae_10": 2.5e-05,
        "per_source": {"major": 3.1e-05, "rare": 1.9e-05},
    },
    "reversibility": {"mae": 0.00060059, "rare_as_source": 0.0012, "rare_as_target": 1.195697318934208e-09},
    "truth": {
        "mae_cf": 0.0885,
        "mae_identity": 0.2688,
        "ratio": 0.3292,
        "rare_as_source": {"mae_cf": 0.09123, "mae_identity": 0.2611, "ratio": 0.3494},
        "rare_as_target": {"mae_cf": 0.0857982411980629, "mae_identity": 0.2765634655952453, "ratio": 0.310230},
    },
    "targets": {
        "effectiveness": {"pass": True, "threshold": 0.95, "value": 0.953125},
        "mae_ratio": {"pass": True, "threshold": 0.5, "value": 0.3292},
        "reversibility": {"pass": True, "threshold": 0.02, "value": 0.00060059},
    },
    "passed": True,
}
