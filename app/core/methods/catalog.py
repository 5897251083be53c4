"""Importing this module registers every built-in method's spec. A new method adds its spec
module here and its implementation in ``worker/unlearning/methods/``."""

from app.core.methods import (  # noqa: F401  (imported to register)
    adversarial,
    dummy_labels,
    exact,
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
