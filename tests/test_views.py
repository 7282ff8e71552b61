"""Cached training views and inference encode the same crops: for every view set, a photo's feature from the
cache (training, cross-validation) equals its feature from ``encode_images`` (the Predictor, the app)."""
from __future__ import annotations

import pytest
import torch

from geosurge.data.images import load_image
from geosurge.data.records import read_records
from geosurge.model import GeoSURGE, ModelConfig
from geosurge.model.config import BackboneConfig, GeoConfig
from geosurge.model.encode import encode_images, view_features
from geosurge.model.views import VIEW_SETS, VIEWS, build_views, check_views


@pytest.fixture(scope="module")
def model_and_photos(shared_dir):
    cfg = ModelConfig(backbone=BackboneConfig("efficientnet-lite0", image_size=96, trainable_blocks=0),
                      geo=GeoConfig(embed_dim=32, tau_min=2, tau_maxes=[40, 12]))
    cfg.fusion.enabled = False
    torch.manual_seed(0)
    model = GeoSURGE(cfg, [4, 9]).eval()
    records, _ = read_records(shared_dir / "data/im2gps3k-dev/test.csv")
    return model, records.subset([0, 1, 2])


def test_every_view_set_has_a_name_and_a_crop_count():
    assert VIEWS == tuple(VIEW_SETS) and VIEW_SETS == {"center": 1, "ten": 10, "five": 5}
    with pytest.raises(ValueError, match="views must be one of 'center', 'ten', 'five', not 'all'"):
        check_views("all")


@pytest.mark.parametrize("views", VIEWS)
def test_cached_views_give_the_features_inference_gives(model_and_photos, views):
    model, records = model_and_photos
    cached = build_views(model, records, None, views, progress=False)
    assert cached.hidden.shape[:2] == (3, VIEW_SETS[views]) and cached.keep.tolist() == [0, 1, 2]
    images = [load_image(records.path(i)) for i in range(3)]
    live = encode_images(model, images, views=views)
    # the cache stores float16: features agree to its precision, and each photo is nearest its own
    assert torch.allclose(view_features(model, cached), live, atol=5e-3)
    assert (view_features(model, cached) @ live.T).argmax(1).tolist() == [0, 1, 2]
