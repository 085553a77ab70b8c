"""Image stores and the datasets that fill them: the synthetic benchmark and real-data adapters."""
