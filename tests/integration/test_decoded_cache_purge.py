"""Erasure drops exactly the decoded-image arrays that hold an erased image: none of them is
left, and the arrays of untouched sample lists stay for the next request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select

from app.db.models import Sample
from app.db.session import session_scope
from app.settings import get_settings
from worker.samples import dataset_cache_dir
from worker.training.data import load_images


def test_erasure_purges_the_arrays_that_hold_the_image_and_keeps_the_others(
    sqlite_service, tiny_dataset: Path
) -> None:
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], image_size=16)
    with session_scope() as session:
        rel_path = session.scalars(
            select(Sample.rel_path)
            .where(Sample.dataset_id == dataset["id"], Sample.split == "train")
            .order_by(Sample.id)
        ).first()
    assert rel_path is not None
    image = load_images([tiny_dataset / rel_path], image_size=16, channels=3).numpy()[0]
    folder = dataset_cache_dir(get_settings(), dataset["id"])
    arrays_before = {p.name for p in folder.glob("*.npy")}
    holding = {p.name for p in folder.glob("*.npy") if (np.load(p) == image).all((1, 2, 3)).any()}
    assert holding and holding != arrays_before  # the test split's array does not hold it

    done = service.forget({"model": model["id"], "filenames": [str(rel_path)]})
    assert done["status"] == "completed", done
    left = list(folder.glob("*.npy"))
    for array in left:
        assert not (np.load(array) == image).all((1, 2, 3)).any(), array.name
    assert not any(p.name.startswith(".") for p in folder.iterdir())
    # Arrays that never held the image survive (the test split's at least).
    assert {p.name for p in left} & (arrays_before - holding)
