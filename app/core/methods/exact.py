"""Exact methods: run by the service's SISA engine over checkpoints, not on a model in memory.

Their specs carry no ``run``; :attr:`Runner.SISA` tells the service to hand the request to the
SISA engine.
"""

from __future__ import annotations

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class SisaConfig(MethodConfig):
    """No options: shards, slices and the training recipe come from the model's version."""


class RetrainConfig(MethodConfig):
    """No options: the training recipe comes from the model's version."""


SISA = register(
    MethodSpec(
        name="sisa",
        summary=(
            "SISA exact unlearning: retrain only the shards that held the forgotten data, each "
            "from the checkpoint taken before its first affected slice, without that data; "
            "checkpoints of unaffected shards and slices are reused."
        ),
        paper="Bourtoule et al., Machine Unlearning, IEEE S&P 2021",
        targets=frozenset({Target.FILES, Target.CLASSES}),
        runner=Runner.SISA,
        exact=True,
        config_model=SisaConfig,
        reads_forget_images=False,
    )
)


RETRAIN = register(
    MethodSpec(
        name="retrain",
        summary=(
            "Full retrain: retrain every constituent from scratch without the forgotten data. "
            "Exact; the gold standard the approximate methods are compared with."
        ),
        paper="Bourtoule et al., Machine Unlearning, IEEE S&P 2021 (baseline)",
        targets=frozenset({Target.FILES, Target.CLASSES}),
        runner=Runner.SISA,
        exact=True,
        config_model=RetrainConfig,
        reads_forget_images=False,
    )
)
