"""Importing this package registers every built-in method (torch-free: each module imports torch
inside its run function only)."""

from worker.unlearning.methods import (  # noqa: F401  (imported to register)
    adversarial,
    exact,
    finetune,
    l1_sparse,
    neggrad_plus,
    random_label,
    ssd,
    unsir,
)
