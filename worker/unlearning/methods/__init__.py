"""Importing this package registers every built-in method's implementation (torch-free: each
module imports torch inside its run function only). Specs live in ``app.core.methods``."""

from worker.unlearning.methods import (  # noqa: F401  (imported to register)
    adversarial,
    dummy_labels,
    finetune,
    kodge,
    l1_sparse,
    neggrad_plus,
    pruning,
    random_label,
    salun,
    scrub,
    ssd,
    unsir,
    weight_filtering,
)
