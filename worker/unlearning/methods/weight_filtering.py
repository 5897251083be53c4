"""Weight filtering (Poppi et al., arXiv 2304.02049): materialise the filtered weights.

The filters were trained beforehand for this constituent (``worker.flows.filters``); forgetting
multiplies every convolution and linear kernel by the forgotten classes' filter rows. No
gradient, no data: the caller hands the rows in ``UnlearningInputs.filters``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.weight_filtering import SPEC, WeightFilteringConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    from worker.unlearning.base import UnlearningInputs


def run(inputs: UnlearningInputs, config: WeightFilteringConfig) -> MethodResult:
    from worker.unlearning.filtering import apply_filters, filtered_layers

    if inputs.filters is None:
        raise ValueError(
            "weight_filtering needs the model's trained filters "
            "(POST /v1/models/{id}/filters first)"
        )
    if not inputs.forget_classes:
        raise ValueError("weight_filtering forgets classes; none were named")
    inputs.progress(0.0, "filter")
    model = inputs.model
    apply_filters(model, inputs.filters, inputs.forget_classes)
    model.eval()
    rows = inputs.filters.rows
    zeroed = {
        name: int(
            sum(
                int((rows[name][inputs.filters.classes.index(c)] == 0).sum())
                for c in inputs.forget_classes
            )
        )
        for name in filtered_layers(model)
    }
    inputs.progress(1.0, "done")
    return MethodResult(
        details={
            "classes_filtered": list(inputs.forget_classes),
            "kernels_zeroed": zeroed,
            "kernels_filtered": sum(int(r.shape[1]) for r in rows.values()),
        }
    )


register_runner(SPEC.name, run)
