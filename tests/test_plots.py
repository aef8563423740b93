"""Figure glue (qparse_lite.viz.plots): figures that must not fail on short or empty inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from qparse_lite.labels import ATR18  # noqa: E402
from qparse_lite.match_rcnn.figures import show_retrieval  # noqa: E402

SHOP = 1_000_000


def _query(n_gallery: int) -> dict:
    return {
        "query_image_id": 3, "query_bbox": [4, 4, 20, 28], "query_score": 0.9, "query_cls": 1,
        "gallery_image_id": [3 + SHOP, 5 + SHOP, 7 + SHOP][:n_gallery],
        "gallery_bbox": [[4, 4, 20, 28], [2, 2, 10, 10], [0, 0, 31, 31]][:n_gallery],
        "gallery_score": [0.8, 0.5, 0.1][:n_gallery],
    }  # fmt: skip


@pytest.fixture
def images() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    return {i: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in (3, 3 + SHOP, 5 + SHOP, 7 + SHOP)}


@pytest.mark.parametrize("n_gallery", [0, 2, 3])
def test_show_retrieval_with_a_gallery_shorter_than_n(images, n_gallery):
    """Notebook 07's IndexError: the best query's gallery held fewer than the 5 items the figure drew."""
    fig = show_retrieval(_query(n_gallery), images, ATR18, n=5, shop_id_offset=SHOP, title="t")
    axes = fig.axes
    assert len(axes) == 6
    assert axes[0].get_title() == "query (user view)"
    for r in range(5):
        ax = axes[1 + r]
        if r < n_gallery:
            assert ax.get_title().startswith(f"rank {r + 1}")
            assert ax.images, "a ranked item is drawn as an image"
        else:
            assert [t.get_text() for t in ax.texts] == [f"rank {r + 1}:\nno gallery item"]
            assert not ax.images
    if n_gallery:
        assert axes[1].get_title() == "rank 1 (query's own view)"  # 3 + SHOP is the query's shop view
    if n_gallery >= 2:
        assert axes[2].get_title() == "rank 2"
    plt.close(fig)


def test_show_retrieval_full_gallery_and_no_query(images):
    fig = show_retrieval(_query(3), images, ATR18, n=3, shop_id_offset=SHOP)
    assert len(fig.axes) == 4 and all(ax.images for ax in fig.axes)
    plt.close(fig)
    fig = show_retrieval(None, images, ATR18, n=5)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no detection"] and len(fig.axes) == 6
    plt.close(fig)
