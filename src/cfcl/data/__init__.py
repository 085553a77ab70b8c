"""Image stores and the datasets that fill them: the synthetic benchmark and real-data adapters."""

# The real datasets ``cfcl data prepare`` reads: each has a module ``cfcl.data.datasets.<name>``
# and a section ``<name>`` in its config (docs/architecture.md, "Where new things go").
DATASETS = ("padchest", "chexpert", "rsna", "embed", "vindr", "mimic", "nih", "csv")
