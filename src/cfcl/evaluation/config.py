"""Configuration of the ``cfcl evaluate`` stage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from cfcl.config import StrictModel
from cfcl.training import DevicesConfig, TrainerConfig


class ProbeConfig(StrictModel):
    """Logistic regression on standardised frozen features, classes weighted by frequency."""

    C: float = Field(1.0, gt=0)
    max_iter: int = Field(1000, ge=10)


class FinetuneConfig(StrictModel):
    """Full fine-tuning (encoder + linear head), early stopping on validation AUROC.

    ``enabled`` fine-tunes every pretrained encoder; ``supervised`` trains the same architecture
    from random initialisation (the supervised-from-scratch baseline). ``ood`` also fine-tunes
    on the OOD training split (reference protocol), holding out ``ood_val_fraction`` of it,
    grouped by patient, for early stopping.
    """

    enabled: bool = False
    supervised: bool = True
    ood: bool = True
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    patience: int = Field(3, ge=1)
    ood_val_fraction: float = Field(0.2, gt=0, lt=1)
    trainer: TrainerConfig = TrainerConfig(max_epochs=2, progress_bar=False, log_every_n_steps=5)


class EmbeddingConfig(StrictModel):
    """Domain predictability (PCA + logistic regression, k-fold), clustering by domain (k-NN purity,
    silhouette) for every seed's encoder, and a t-SNE map of the first seed's."""

    enabled: bool = True
    split: list[str] = ["test", "ood_test"]
    per_domain: int = Field(200, ge=5, description="images drawn per domain (fewer if a domain has fewer)")
    pca_dim: int = Field(16, ge=1)
    knn_k: int = Field(10, ge=1, description="neighbours of the k-NN domain purity")
    folds: int = Field(5, ge=2)
    tsne_points: int = Field(600, ge=10)
    perplexity: float = Field(30.0, gt=1)


class SubgroupConfig(StrictModel):
    """Metrics per value of each metadata column in ``columns`` (sex: ``sex=F``, ``sex=M``) on every test set and
    its domains, and the gap between the values over seeds. A store without a column, or with one value in it,
    skips that column with a note; a subgroup with fewer than ``min_per_class`` test images of some class is
    skipped with a note (too few for a stable AUROC)."""

    columns: list[str] = ["sex"]
    min_per_class: int = Field(10, ge=1)


class EvaluateConfig(StrictModel):
    """Linear probes, fine-tuning and baselines over label fractions and seeds.

    Seed pairing: for evaluation seed ``s``, every method uses its encoder pretrained with seed
    ``s``; a method without one is an error.
    """

    unhashed = frozenset({"trainer"})  # the processes that share the feature extraction do not change the results

    data: Path | None = Field(None, description="image store (run/data)")
    encoders: list[Path] = Field(default_factory=list, description="pretrain stage folders")
    label_fractions: list[float] = [0.1, 1.0]
    seeds: list[int] = [0, 1, 2]
    label_draws: int = Field(
        1,
        ge=1,
        description="independent labelled subsets per seed and fraction below 1 for the linear probes; "
        "their metrics are averaged per seed (fine-tuning takes the first)",
    )
    random_baseline: bool = True
    covariates_baseline: bool = Field(
        True,
        description="probe on the store's covariates (store.json 'covariates'), no image: what the label owes to them",
    )
    rendered_test: bool = Field(
        True,
        description="on the synthetic benchmark, also test the ID probe on the ID test patients as every scanner "
        "renders them (its true counterfactuals; test_set 'rendered')",
    )
    reference_method: str = "simclr"
    probe: ProbeConfig = ProbeConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    embeddings: EmbeddingConfig = EmbeddingConfig()
    subgroups: SubgroupConfig = SubgroupConfig()
    n_boot: int = Field(200, ge=10)
    ci_level: float = Field(0.95, gt=0, lt=1)
    batch_size: int = Field(256, ge=1, description="feature extraction batch size")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: each rank's own CUDA GPU when there is one, else the CPU"
    )
    trainer: DevicesConfig = Field(
        DevicesConfig(),
        description="processes to split the feature extraction over (devices x num_nodes); under cfcl run, the run's",
    )

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < f <= 1 for f in value):
            raise ValueError("label fractions must be a non-empty list of numbers in (0, 1]")
        return sorted(set(value))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("at least one seed is needed")
        return sorted(set(value))
