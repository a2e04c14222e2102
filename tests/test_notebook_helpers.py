"""Helpers the notebooks call, on hand-worked inputs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from canlib.repro import notebook


def test_family_confusions_by_hand():
    # Gallery: pid 1, 2, 4, 3, 5 (all camera 1); families: {1, 2} and {3, 4}; 5 has none.
    # q0 (pid 1): ranked 1 (hit), 2, ... -> first wrong is 2, its family: a confusion.
    # q1 (pid 3): ranked 2, 3 (hit), ... -> first wrong is 2, another family: none.
    # q2 (pid 5): no family. Shares: 1 of 3 queries, 1 of 2 family queries.
    raw = {
        "distmat": np.array(
            [[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.1, 0.3, 0.2, 0.6], [0.1, 0.2, 0.3, 0.4, 0.05]]
        ),
        "q_pids": np.array([1, 3, 5]),
        "q_camids": np.array([0, 0, 0]),
        "g_pids": np.array([1, 2, 4, 3, 5]),
        "g_camids": np.array([1, 1, 1, 1, 1]),
    }
    got = notebook.family_confusions(raw, {1: 0, 2: 0, 3: 1, 4: 1})
    assert got["queries"] == 3 and got["queries in families"] == 2
    assert got["top wrong match in the family (% of all queries)"] == pytest.approx(100 / 3)
    assert got["top wrong match in the family (% of family queries)"] == pytest.approx(50.0)


class _MapModel(nn.Module):
    """A stand-in whose layer-4 'map' is fixed: 1 on the top half of the image, 0 below."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.size = (height, width)

    def feature_maps(self, images):
        fmap = torch.zeros(len(images), 2, *self.size)
        fmap[:, :, : self.size[0] // 2] = 1.0
        return {"global": fmap}


def test_body_share_is_the_maps_mass_inside_the_person_mask(tmp_path, monkeypatch):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path))
    from canlib import engine, synthetic
    from canlib.repro.experiments import profile

    cfg = profile("smoke")
    data = engine.build_data(cfg)
    name = str(Path(data.query[0][0]).relative_to(data.root))
    mask = synthetic.render_masks(data.root, [name])[name] > 0
    h, w = mask.shape
    # The map is drawn at the crop's own size, so no resizing: the share is the person's
    # pixels in the top half over all top-half pixels.
    want = 100.0 * mask[: h // 2].sum() / (h // 2 * w)
    got = notebook.body_share(_MapModel(h, w), data, cfg, count=1)
    assert got == pytest.approx(want, rel=1e-5)
    assert (
        notebook.body_share(
            _MapModel(h, w),
            data,
            cfg.with_overrides({"data.dataset": "market1501", "data.data_root": "/x"}),
            count=1,
        )
        is None
    )
