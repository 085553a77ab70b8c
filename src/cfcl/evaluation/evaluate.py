"""The ``cfcl evaluate`` stage: probes, fine-tuning and baselines over label fractions and seeds.

This module drives the evaluation: it extracts features, fits probes, fine-tunes and measures the
embeddings, collecting :class:`~cfcl.evaluation.results.Results`, which
:func:`cfcl.evaluation.results.write_tables` writes into ``out``: ``metrics.csv`` (long format;
whole test sets and, per ``subgroups`` column such as sex, each value's test images),
``seed_gains.csv`` (gain over the reference method per metric, t-interval over seeds: the one that
decides), ``subgroup_gaps.csv`` (per method, each subgroup minus its column's reference, e.g. AUROC
of ``sex=M`` minus ``sex=F``, t-interval over seeds), ``variance_components.csv`` (how much of each
gain's spread comes from the pretraining seed, the label draw and the test images), ``gains.csv``
(AUROC gain over the reference with paired bootstrap intervals over test images),
``domain_predictability.csv`` (per method and seed: linear predictability, k-NN purity and
silhouette by domain), ``tsne/<method>.csv`` + ``tsne_<method>.png`` and ``notes.txt`` (everything
skipped and why). The stage itself keeps ``features/`` (cached frozen features, extracted in a shard
per rank under several processes) and ``finetune/`` (one Lightning run folder per fine-tuning: logs
and ``test_prob.npy``; its checkpoints are deleted once the test predictions are saved, and a run
with saved predictions is not repeated).

Protocols: ``linear`` probes trained on ID labels are tested on ID ``test`` (test_set ``id``)
and probes trained on ``ood_train`` labels on ``ood_test`` (test_set ``ood``, the reference
protocol); ``transfer`` applies the ID probe unchanged to ``ood_test``; ``finetune`` trains
encoder and head on ID labels (test_set ``id``) and, if enabled, on ``ood_train`` (test_set ``ood``).
On the synthetic benchmark (a store with true counterfactuals) the ID probe is also tested on the
ID test patients as every scanner renders them, the held-out one included (protocol ``linear``,
test_set ``rendered``, one domain per scanner and no pooled row): the same patients under every scanner, so a
scanner's drop and a gain on a rare or unseen scanner are measured on every test patient rather
than on the few that scanner imaged (``rendered_test``). There the headroom is measured too: per scanner,
the ``ceiling`` probe, trained on the labelled training patients as that scanner renders them; the
robustness gap, the ceiling's AUROC minus the ID probe's; and each encoder's counterfactual invariance
(``domain_predictability.csv``). The ID probe (binary labels) is also scored at the threshold chosen on
the ID validation images.
A label fraction too small to hold every class is skipped with a line in ``notes.txt``.

A multi-label store (``store.json`` ``findings``) trains one head over all its findings wherever a single-label
store trains one over its classes: one logistic probe per finding on the images where it is known
(:func:`cfcl.evaluation.probe.fit_finding_probes`), and fine-tuning with a binary cross-entropy per finding from
which missing findings are masked out (:func:`cfcl.evaluation.finetune_encoder.masked_bce`). Label fractions are
drawn by domain and ``label`` ("any finding") as always, and must hold every finding present and absent. It is scored
per finding and by the mean AUROC over findings (:mod:`cfcl.evaluation.results`).

Baselines: ``random`` (the architecture at random initialisation), ``supervised`` (fine-tuned
from it) and ``covariates``: the linear probe on the covariates the store lists (the synthetic
benchmark's age, sex and anatomy traits), no image at all: what a probe gets without the lesion.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfcl import layout
from cfcl.config import config_hash
from cfcl.contrastive.encoders import build_encoder, encoder_file, load_encoder
from cfcl.data.store import INFO, ImageStore
from cfcl.distributed import Coordinator, current
from cfcl.errors import CheckpointError, ConfigError
from cfcl.evaluation import embeddings
from cfcl.evaluation.config import EvaluateConfig
from cfcl.evaluation.features import cache_key, cached, extract_features, save_array
from cfcl.evaluation.finetune_encoder import finetune, predict_probabilities
from cfcl.evaluation.metrics import MetricError, auroc_defined, val_threshold
from cfcl.evaluation.probe import class_probabilities, finding_probabilities, fit_finding_probes, fit_probe
from cfcl.evaluation.results import CEILING, RENDERED, Invariance, Prediction, Results, TsneMap, write_tables
from cfcl.evaluation.subsets import SubsetTooSmall, labelled_subset, patient_holdout, require_findings
from cfcl.stage import Stage, fingerprint, run_stage
from cfcl.training import resolve_device

STAGE = layout.EVAL
RANDOM = "random"
SUPERVISED = "supervised"
COVARIATES = "covariates"
ID_TRAIN, ID_VAL, ID_TEST, OOD_TRAIN, OOD_TEST = "train", "val", "test", "ood_train", "ood_test"


@dataclass
class EncoderRef:
    """A pretrained encoder (``path``) or a random initialisation (``path`` None) of ``info``'s architecture."""

    method: str
    seed: int
    info: dict
    path: Path | None = None

    def key(self, store: ImageStore, rows: np.ndarray | None = None) -> str:
        """Identifies the weights (checkpoint content, or architecture + seed), the store's content and ``rows``."""
        chosen = [] if rows is None else [hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64)).hexdigest()]
        if self.path is None:
            arch = json.dumps([self.info["arch"], self.info["arch_kwargs"]], sort_keys=True)
            return cache_key(self.method, arch, str(self.seed), torch.__version__, store.content_hash, *chosen)
        return cache_key(fingerprint(encoder_file(self.path)), store.content_hash, *chosen)

    def features(
        self,
        store: ImageStore,
        cache: Path,
        batch_size: int,
        device: torch.device,
        coordinator: Coordinator | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Frozen features of every store image (or of ``rows``, in that order), cached under :meth:`key`; with the
        ``coordinator`` of several ranks each extracts its shard of the images and only rank 0 gets the array."""
        chosen = np.arange(len(store)) if rows is None else rows
        return cached(
            cache,
            self.key(store, rows),
            len(chosen),
            lambda part: extract_features(
                self.build(), store.images[chosen[part.start : part.stop]], batch_size, device
            ),
            unit=batch_size,
            coordinator=coordinator,
        )

    def build(self) -> torch.nn.Module:
        if self.path is not None:
            return load_encoder(self.path)[0]
        torch.manual_seed(self.seed)
        return build_encoder(self.info["arch"], **self.info["arch_kwargs"])


@dataclass
class RenderedTest:
    """The images of one split as every scanner renders them: rows of the benchmark's true counterfactual store."""

    store: ImageStore
    rows: np.ndarray  # rows of ``store``, by rendering scanner, then by patient
    sources: np.ndarray  # each row's source image in the evaluated store (label, covariates, subgroups)
    domains: np.ndarray  # each row's rendering scanner

    def positions(self, sources: np.ndarray, domain: int) -> np.ndarray:
        """Where the evaluated store's images ``sources`` are, as scanner ``domain`` renders them (positions in
        :attr:`rows`)."""
        block = np.flatnonzero(self.domains == domain)
        return block[np.searchsorted(self.sources[block], sources)]


def rendered_test(store: ImageStore, split: str = ID_TEST) -> RenderedTest | None:
    """The store's ``split`` images under every scanner, from its true counterfactuals; None without them."""
    folder = layout.true_cf(store.path)
    if not (folder / INFO).is_file():
        return None
    cf = ImageStore.open(folder)
    cf.require_counterfactuals_of(store)
    meta = cf.meta[cf.meta["source_index"].isin(store.indices(split))].sort_values(["target_domain", "source_index"])
    return RenderedTest(cf, meta.index.to_numpy(), meta["source_index"].to_numpy(), meta["target_domain"].to_numpy())


def load_encoders(paths: list[Path], store: ImageStore) -> dict[str, dict[int, EncoderRef]]:
    """``{method: {pretraining seed: encoder}}``; every checkpoint must fit the store's images."""
    methods: dict[str, dict[int, EncoderRef]] = {}
    for path in paths:
        _, info = load_encoder(path)
        target = encoder_file(path)
        if tuple(info["image_size"]) != tuple(store.size):
            h, w = info["image_size"]
            raise CheckpointError(
                f"encoder checkpoint {target} was trained on {h}x{w} images; store {store.path} holds "
                f"{store.size[0]}x{store.size[1]}"
            )
        method, seed = str(info["method"]), int(info["seed"])
        if method in (RANDOM, SUPERVISED, COVARIATES):
            raise ConfigError(f"encoder {target}: method name {method!r} is reserved for a baseline")
        if seed in methods.get(method, {}):
            raise ConfigError(f"encoders {methods[method][seed].path} and {path} are both {method} seed {seed}")
        methods.setdefault(method, {})[seed] = EncoderRef(method, seed, info, Path(path))
    return methods


def encoder_for_seed(encoders: dict[int, EncoderRef], seed: int) -> EncoderRef:
    """The encoder pretrained with ``seed``: reusing another seed's would make pseudo-replicates."""
    if seed not in encoders:
        some = encoders[min(encoders)]
        folders = ", ".join(str(e.path) for e in encoders.values())
        raise ConfigError(
            f"evaluate: no {some.method} encoder pretrained with seed {seed} (given: {folders}); "
            f"pass its pretrain folder with --encoder or drop seed {seed} from 'seeds'"
        )
    return encoders[seed]


def _open_inputs(config: EvaluateConfig) -> tuple[ImageStore, dict[str, dict[int, EncoderRef]]]:
    if config.data is None:
        raise ConfigError("evaluate: 'data' is not set (pass --data STORE)")
    if not config.encoders:
        raise ConfigError("evaluate: no encoder given (pass --encoder PRETRAIN_FOLDER, repeatable)")
    store = ImageStore.open(config.data)
    for split in (ID_TRAIN, ID_TEST):
        if len(store.indices(split)) == 0:
            raise ConfigError(f"image store {store.path} has no '{split}' images")
    for split in (ID_TEST, OOD_TEST):
        present = np.unique(store.meta["label"].to_numpy()[store.indices(split)])
        if len(store.indices(split)) and len(present) < 2:
            raise MetricError(
                f"image store {store.path}: split '{split}' holds a single label {present.tolist()}; AUROC is undefined"
            )
    methods = load_encoders(config.encoders, store)
    for encoders in methods.values():
        for seed in config.seeds:
            encoder_for_seed(encoders, seed)
    return store, methods


class Evaluation:
    """One evaluation run: shared inputs, and what it measured (:attr:`results`)."""

    def __init__(self, config: EvaluateConfig, store: ImageStore, out: Path):
        self.config, self.store, self.out = config, store, out
        self.device = resolve_device(config.device, current().ranks.local_rank)
        self.labels = store.meta["label"].to_numpy()
        self.domains = store.meta["domain"].to_numpy()
        self.n_classes = len(store.labels)
        self.findings = store.findings
        # what a classifier learns: the labels, or a multi-label store's findings [N, F] (1 / 0 / NaN missing)
        self.targets = store.finding_matrix() if self.findings else self.labels
        self.n_outputs = len(self.findings) or self.n_classes
        self.rows = {s: store.indices(s) for s in (ID_TRAIN, ID_VAL, ID_TEST, OOD_TRAIN, OOD_TEST)}
        self.results = Results()
        self.predictions, self.notes = self.results.predictions, self.results.notes  # appended to as it runs
        self.attributes = self.subgroup_columns()
        self.rendered = rendered_test(store) if config.rendered_test else None
        self.rendered_train = rendered_test(store, ID_TRAIN) if self.rendered is not None else None

    def subset(self, split: str, fraction: float, seed: int, draw: int = 0) -> np.ndarray | None:
        if len(self.rows[split]) == 0:
            return None
        try:
            subset = labelled_subset(self.store.meta, self.rows[split], fraction, seed, split, draw)
            if self.findings:
                require_findings(self.targets, self.findings, subset, f"label fraction {fraction:g} of split '{split}'")
            return subset
        except SubsetTooSmall as exc:
            self.notes.append(f"seed {seed}{f' draw {draw}' if draw else ''}: skipped: {exc}")
            return None

    def record(
        self,
        method: str,
        seed: int,
        protocol: str,
        fraction: float,
        test_set: str,
        rows: np.ndarray,
        prob: np.ndarray,
        draw: int = 0,
        domains: np.ndarray | None = None,
        threshold: float | None = None,
    ) -> None:
        """Scores of the store's ``rows`` (their labels or findings, and subgroups), imaged by ``domains`` (default:
        their own, and the whole test set is scored too; given ``domains``, the same patients under several, only each
        domain)."""
        self.predictions.append(
            Prediction(
                method,
                seed,
                protocol,
                fraction,
                test_set,
                self.targets[rows],
                self.domains[rows] if domains is None else domains,
                prob,
                {column: values[rows] for column, values in self.attributes.items()},
                draw,
                pooled=domains is None,
                threshold=threshold,
                findings=self.findings,
            )
        )

    def subgroup_columns(self) -> dict[str, np.ndarray]:
        """Each ``subgroups`` column's values as text ("" where unknown); a column the store lacks, or with one value,
        is noted."""
        source = self.store.path / "metadata.csv"
        attributes = {}
        for column in self.config.subgroups.columns:
            if column not in self.store.meta.columns:
                self.notes.append(f"subgroups by '{column}' skipped: {source} has no '{column}' column")
                continue
            raw = self.store.meta[column]
            values = raw.where(raw.notna(), "").astype(str).str.strip().to_numpy()
            known = sorted(set(values) - {""})
            if len(known) < 2:
                self.notes.append(
                    f"subgroups by '{column}' skipped: {source} holds {len(known)} value(s) {known} in '{column}'"
                )
                continue
            if (values == "").any():
                unknown = int((values == "").sum())
                self.notes.append(f"{unknown} image(s) without a '{column}' value belong to no '{column}' subgroup")
            attributes[column] = values
        return attributes

    def fit(self, features: np.ndarray, targets: np.ndarray, seed: int):
        """The linear probe of ``features`` for ``targets`` (rows of :attr:`targets`): one over the classes, or one
        per finding."""
        cfg = self.config.probe
        if self.findings:
            return fit_finding_probes(features, targets, cfg.C, cfg.max_iter, seed)
        return fit_probe(features, targets, cfg.C, cfg.max_iter, seed)

    def probabilities(self, probe, features: np.ndarray) -> np.ndarray:
        """``[N, n_outputs]``: a :meth:`fit` probe's class probabilities, or each finding's."""
        if self.findings:
            return finding_probabilities(probe, features)
        return class_probabilities(probe, features, self.n_classes)

    def linear(
        self,
        method: str,
        seed: int,
        features: np.ndarray,
        fraction: float,
        rendered: np.ndarray | None = None,
        rendered_train: np.ndarray | None = None,
    ) -> None:
        """ID probe -> ID test (linear), OOD test (transfer) and, given the ``rendered`` test's features, the ID
        test patients under every scanner (linear, test_set ``rendered``), there beside each scanner's ceiling
        probe (given the ``rendered_train`` features); OOD probe -> OOD test (linear); once per label draw (all
        labels: one draw, the others would be the same)."""
        test, ood_test = self.rows[ID_TEST], self.rows[OOD_TEST]
        for draw in range(self.config.label_draws if fraction < 1 else 1):
            train = self.subset(ID_TRAIN, fraction, seed, draw)
            if train is not None:
                probe = self.fit(features[train], self.targets[train], seed)
                threshold = self.threshold(probe, features)
                prob = self.probabilities(probe, features[test])
                self.record(method, seed, "linear", fraction, "id", test, prob, draw, threshold=threshold)
                if rendered is not None:
                    prob = self.probabilities(probe, rendered)
                    self.record(
                        method,
                        seed,
                        "linear",
                        fraction,
                        RENDERED,
                        self.rendered.sources,
                        prob,
                        draw,
                        self.rendered.domains,
                        threshold,
                    )
                if rendered is not None and rendered_train is not None:
                    prob = self.ceiling(rendered, rendered_train, train, seed)
                    self.record(
                        method,
                        seed,
                        CEILING,
                        fraction,
                        RENDERED,
                        self.rendered.sources,
                        prob,
                        draw,
                        self.rendered.domains,
                    )
                if len(ood_test):
                    prob = self.probabilities(probe, features[ood_test])
                    self.record(method, seed, "transfer", fraction, "ood", ood_test, prob, draw, threshold=threshold)
            ood_train = self.subset(OOD_TRAIN, fraction, seed, draw)
            if ood_train is not None and len(ood_test):
                probe = self.fit(features[ood_train], self.targets[ood_train], seed)
                prob = self.probabilities(probe, features[ood_test])
                self.record(method, seed, "linear", fraction, "ood", ood_test, prob, draw)

    def threshold(self, probe, features: np.ndarray) -> float | None:
        """The ID probe's threshold with the best balanced accuracy on the ID validation images; None beyond two
        classes, with findings or without validation images of both classes."""
        val = self.rows[ID_VAL]
        if self.findings or self.n_classes != 2 or len(np.unique(self.labels[val])) < 2:
            return None
        return val_threshold(self.labels[val], class_probabilities(probe, features[val], self.n_classes)[:, 1])

    def ceiling(self, rendered: np.ndarray, rendered_train: np.ndarray, train: np.ndarray, seed: int) -> np.ndarray:
        """Probabilities on the ``rendered`` test images of, per scanner, a probe trained on the labelled
        ``train`` patients as that scanner renders them: the best a linear probe of these features does there."""
        prob = np.empty((len(rendered), self.n_outputs))
        for domain in np.unique(self.rendered.domains):
            fit_rows = rendered_train[self.rendered_train.positions(train, domain)]
            probe = self.fit(fit_rows, self.targets[train], seed)
            shown = self.rendered.domains == domain
            prob[shown] = self.probabilities(probe, rendered[shown])
        return prob

    def finetune(self, ref: EncoderRef, method: str, seed: int, fraction: float) -> None:
        """Fine-tune on ID labels (validation: the ID val split) and, if enabled, on OOD labels."""
        cfg = self.config.finetune
        plans = [("id", self.subset(ID_TRAIN, fraction, seed), self.rows[ID_VAL], self.rows[ID_TEST])]
        if cfg.ood and len(self.rows[OOD_TEST]):
            ood = self.subset(OOD_TRAIN, fraction, seed)
            split = None
            if ood is not None:
                try:
                    split = patient_holdout(self.store.meta, ood, cfg.ood_val_fraction, seed)
                except SubsetTooSmall as exc:
                    self.notes.append(f"{method} seed {seed} fraction {fraction:g}: OOD fine-tuning skipped: {exc}")
            if split is not None:
                plans.append(("ood", split[0], split[1], self.rows[OOD_TEST]))
        for test_set, train, val, test in plans:
            if train is None:
                continue
            if not auroc_defined(self.targets[val]):
                lacking = "a finding not both present and absent" if self.findings else "a single class"
                self.notes.append(
                    f"{method} seed {seed}: fine-tuning on {test_set} skipped: validation set holds {lacking}"
                )
                continue
            key = cache_key(ref.key(self.store), config_hash(cfg))
            run_dir = self.out / layout.FINETUNE_RUNS / f"{method}-s{seed}-f{fraction:g}-{test_set}-{key}"
            result = run_dir / layout.TEST_PROB
            if result.is_file():
                prob = np.load(result)
            else:
                model = finetune(
                    ref.build().train(), self.store.images, self.targets, train, val, self.n_outputs, cfg, run_dir, seed
                )
                prob = predict_probabilities(model, self.store.images, test, self.config.batch_size, self.device)
                save_array(result, prob)
                for folder in ("checkpoints", "best"):
                    shutil.rmtree(run_dir / folder, ignore_errors=True)
            self.record(method, seed, "finetune", fraction, test_set, test, prob)

    def covariates(self) -> np.ndarray | None:
        """The store's covariates as probe features, or None (noted) when it lists none or lacks them."""
        names = list(self.store.info.get("covariates") or [])
        lacking = [c for c in names if c not in self.store.meta.columns]
        if not names:
            reason = f"{self.store.path / 'store.json'} lists no 'covariates'"
        elif lacking:
            reason = f"{self.store.path / 'metadata.csv'} lacks covariate column(s) {', '.join(lacking)}"
        elif self.store.meta[names].isna().any(axis=None):
            reason = f"{self.store.path / 'metadata.csv'}: covariate column(s) with missing values"
        else:
            return covariate_features(self.store.meta, names)
        self.notes.append(f"{COVARIATES} baseline skipped: {reason}")
        return None

    def measure_embeddings(
        self, method: str, seed: int, features: np.ndarray, rendered: np.ndarray | None, tsne: bool
    ) -> None:
        """Domain predictability and clustering on equal numbers of images per domain, counterfactual invariance
        given the ``rendered`` test's features; a t-SNE map if ``tsne``."""
        cfg = self.config.embeddings
        pool = self.store.indices(cfg.split)
        chosen = pool[embeddings.equal_per_domain(self.domains[pool], cfg.per_domain, seed)]
        n_domains = len(np.unique(self.domains[chosen]))
        sample, domains = features[chosen], self.domains[chosen]
        mean, std = embeddings.domain_predictability(sample, domains, cfg.pca_dim, cfg.folds, seed)
        self.results.invariance.append(
            Invariance(
                method=method,
                seed=seed,
                balanced_accuracy=mean,
                std=std,
                chance=1 / n_domains,
                n_domains=n_domains,
                n_per_domain=len(chosen) // n_domains,
                knn_purity=embeddings.knn_domain_purity(sample, domains, cfg.knn_k),
                knn_k=cfg.knn_k,
                silhouette=embeddings.domain_silhouette(sample, domains),
                cf_invariance=self.cf_invariance(features, rendered) if rendered is not None else float("nan"),
            )
        )
        if tsne:
            shown = chosen[np.random.default_rng(seed).permutation(len(chosen))[: cfg.tsne_points]]
            self.results.maps.append(
                TsneMap(
                    method,
                    embeddings.tsne_map(features[shown], cfg.perplexity, seed),
                    [self.store.domains[d] for d in self.domains[shown]],
                    [self.store.labels[c] for c in self.labels[shown]],
                )
            )

    def cf_invariance(self, features: np.ndarray, rendered: np.ndarray) -> float:
        """:func:`~cfcl.evaluation.embeddings.counterfactual_invariance` of the ID test images and their true
        counterfactuals on every other scanner."""
        test = self.rows[ID_TEST]
        moved = self.rendered.domains != self.domains[self.rendered.sources]
        return embeddings.counterfactual_invariance(
            features[test],
            self.store.meta["patient_id"].to_numpy()[test],
            rendered[moved],
            np.searchsorted(test, self.rendered.sources[moved]),
        )


def covariate_features(meta: pd.DataFrame, names: list[str]) -> np.ndarray:
    """``[N, D]`` float features of the named metadata columns: numbers as they are, categories one-hot."""
    return pd.get_dummies(meta[names], drop_first=True, dtype=float).to_numpy(np.float64)


def run(config: EvaluateConfig, out: Path, force: bool = False) -> dict:
    """Run every probe, fine-tuning and embedding analysis the config asks for into ``out``; under
    several processes every rank extracts its shard of the features first (:func:`_evaluate`)."""
    store, methods = _open_inputs(config)
    return run_stage(STAGE, out, config, lambda stage: _evaluate(config, store, methods, stage), force, every_rank=True)


def _evaluate(
    config: EvaluateConfig, store: ImageStore, methods: dict[str, dict[int, EncoderRef]], stage: Stage
) -> dict | None:
    """Every rank extracts its shard of every encoder's features into the cache; the rest runs on rank 0 alone."""
    out = stage.out
    ev = Evaluation(config, store, out)
    first = next(iter(methods.values()))
    architecture = first[min(first)].info
    if config.random_baseline:
        methods[RANDOM] = {s: EncoderRef(RANDOM, s, architecture) for s in config.seeds}

    def rendered_features(
        ref: EncoderRef, rendered: RenderedTest | None, coordinator: Coordinator | None = None
    ) -> np.ndarray | None:
        if rendered is None:
            return None
        return ref.features(
            rendered.store, out / layout.FEATURES, config.batch_size, ev.device, coordinator, rendered.rows
        )

    tic = time.time()
    for _method, encoders in methods.items():
        for seed in config.seeds:
            ref = encoder_for_seed(encoders, seed)
            ref.features(store, out / layout.FEATURES, config.batch_size, ev.device, current())
            rendered_features(ref, ev.rendered, current())
            rendered_features(ref, ev.rendered_train, current())
    if not stage.primary:
        return None
    for method, encoders in methods.items():
        for seed in config.seeds:
            ref = encoder_for_seed(encoders, seed)
            features = ref.features(store, out / layout.FEATURES, config.batch_size, ev.device)
            rendered, rendered_train = rendered_features(ref, ev.rendered), rendered_features(ref, ev.rendered_train)
            for fraction in config.label_fractions:
                ev.linear(method, seed, features, fraction, rendered, rendered_train)
    covariates = ev.covariates() if config.covariates_baseline else None
    if covariates is not None:
        # a patient's covariates stay under every scanner
        rendered, rendered_train = (
            covariates[r.sources] if r is not None else None for r in (ev.rendered, ev.rendered_train)
        )
        for seed in config.seeds:
            for fraction in config.label_fractions:
                ev.linear(COVARIATES, seed, covariates, fraction, rendered, rendered_train)
    stage.timed("linear", time.time() - tic)

    tic = time.time()
    tuned = {m: e for m, e in methods.items() if m != RANDOM} if config.finetune.enabled else {}
    if config.finetune.supervised:
        tuned[SUPERVISED] = {s: EncoderRef(SUPERVISED, s, architecture) for s in config.seeds}
    for method, encoders in tuned.items():
        for seed in config.seeds:
            for fraction in config.label_fractions:
                ev.finetune(encoder_for_seed(encoders, seed), method, seed, fraction)
    stage.timed("finetune", time.time() - tic)

    tic = time.time()
    if config.embeddings.enabled:
        for method, encoders in methods.items():
            for seed in config.seeds:
                ref = encoder_for_seed(encoders, seed)
                features = ref.features(store, out / layout.FEATURES, config.batch_size, ev.device)
                ev.measure_embeddings(
                    method, seed, features, rendered_features(ref, ev.rendered), tsne=seed == config.seeds[0]
                )
    stage.timed("embeddings", time.time() - tic)

    tic = time.time()
    metrics, notes = write_tables(out, ev.results, config, store.domains)
    stage.timed("metrics", time.time() - tic)
    for note in notes:
        print(f"note: {note}")
    print(f"evaluation: {len(metrics)} metric rows for {len(set(metrics['method']))} methods -> {out / 'metrics.csv'}")
    return dict(n_rows=len(metrics), notes=notes)
