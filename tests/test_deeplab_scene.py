"""DeepLab's pooled encoder vector comes out of the same pass as the label map, which it leaves unchanged."""
import csv

import numpy as np
import pytest
from PIL import Image

from geosurge.model.config import SegmenterConfig
from geosurge.model.segmenters import create_segmenter
from geosurge.model.segmenters.deeplab_scene import SCENE_TENSOR, DeepLabScene, expose_tensor


def test_scene_vector_beside_unchanged_labels(shared_dir):
    cfg = SegmenterConfig("deeplab-ade20k", str(shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite"), input_size=385)
    plain, scene = create_segmenter(cfg), DeepLabScene(cfg, num_threads=1)
    assert scene.scene_dim == 320
    rows = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/val.csv")))[:3]
    vectors = []
    for row in rows:
        img = Image.open(shared_dir / "data/im2gps3k-dev/images" / row["image"]).convert("RGB")
        labels, vec = scene.labels_and_scene(img)
        np.testing.assert_array_equal(labels, plain(img))  # the extra output changes nothing in the labels
        np.testing.assert_array_equal(scene(img), labels)  # and __call__ still gives labels only
        assert vec.shape == (320,) and vec.dtype == np.float32 and np.isfinite(vec).all()
        vectors.append(vec)
    # a vector per photo, not a constant: different scenes give clearly different vectors
    a, b = vectors[0], vectors[1]
    assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) < 0.99


def test_expose_tensor_names_a_real_tensor(shared_dir):
    raw = (shared_dir / "models/deeplabv3-mobilenetv2-ade20k/model.tflite").read_bytes()
    with pytest.raises(ValueError, match="no-such-tensor"):
        expose_tensor(raw, "no-such-tensor")
    assert len(expose_tensor(raw, SCENE_TENSOR)) > 0
