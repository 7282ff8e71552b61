"""Golden outputs of the checkpoint shipped in the package, for two photos shipped beside the demo.

The literals below were produced once by running, on CPU in this repository::

    Predictor.from_pretrained(device="cpu").predict_variants([Apple_iPhone_4.jpg, Nokia_Lumia_800.jpg], top_k=3)

(and again with ``decision="argmax"``), each variant encoding a photo from its own views (the five it was trained
and cross-validated on: four corner crops and the centre). They are not targets: they pin what the code does
today. If this test fails, image loading, preprocessing, segmentation, the model or the embedded checkpoint
changed; check that the change is intended and, if it is, regenerate the numbers the same way and say why in the
commit message.
Needs nothing outside the package (the checkpoint, its DeepLab segmenter and the photos all ship in it).
"""

from importlib.resources import files

import pytest

from geosurge import Predictor

PHOTOS = ["Apple_iPhone_4.jpg", "Nokia_Lumia_800.jpg"]

#: variant -> photo -> (lat, lon) under the checkpoint's own decision rule ("within:750")
DECIDED = {
    "fusion": {"Apple_iPhone_4.jpg": (41.416373633746915, -80.23508227754388),
               "Nokia_Lumia_800.jpg": (52.06701007291361, 4.308244798854633)},
    "rgb": {"Apple_iPhone_4.jpg": (52.06701007291361, 4.308244798854633),
            "Nokia_Lumia_800.jpg": (52.06701007291361, 4.308244798854633)},
}
#: variant -> photo -> (lat, lon) of the paper's product rule (argmax); moves with any change in the scores
ARGMAX = {
    "fusion": {"Apple_iPhone_4.jpg": (41.87922979487388, -87.63334056569636),
               "Nokia_Lumia_800.jpg": (22.28927335177531, 114.17305749203935)},
    "rgb": {"Apple_iPhone_4.jpg": (40.9292436847624, -73.90204014270708),
            "Nokia_Lumia_800.jpg": (22.28927335177531, 114.17305749203935)},
}
#: variant -> photo -> S2 tokens of the three best finest cells by product score
TOP_CELLS = {
    "fusion": {"Apple_iPhone_4.jpg": ["880fd4", "880f9", "880e2d"], "Nokia_Lumia_800.jpg": ["340401", "340403", "3401"]},
    "rgb": {"Apple_iPhone_4.jpg": ["488d", "48894", "488b"], "Nokia_Lumia_800.jpg": ["7f", "48884", "79"]},
}
#: variant -> photo -> calibrated chance that the truth lies within R km of the decided point
WITHIN_KM = {
    "fusion": {
        "Apple_iPhone_4.jpg": {1: 8e-06, 25: 8e-06, 200: 0.007728, 750: 0.198, 2500: 0.309},
        "Nokia_Lumia_800.jpg": {1: 6e-06, 25: 6e-06, 200: 0.008676, 750: 0.066939, 2500: 0.253165},
    },
    "rgb": {
        "Apple_iPhone_4.jpg": {1: 1e-05, 25: 1.2e-05, 200: 0.012487, 750: 0.176543, 2500: 0.411519},
        "Nokia_Lumia_800.jpg": {1: 6e-06, 25: 8e-06, 200: 0.007959, 750: 0.115766, 2500: 0.313759},
    },
}


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def photos():
    return [str(files("geosurge.app") / "examples" / name) for name in PHOTOS]


@pytest.fixture(scope="module")
def decided(predictor, photos):
    return predictor.predict_variants(photos, top_k=3)


def test_embedded_checkpoint_runs_both_variants(predictor, decided):
    assert predictor.fusion_available, predictor.fusion_unavailable_reason()
    assert sorted(decided) == ["fusion", "rgb"]


@pytest.mark.parametrize("variant", ["fusion", "rgb"])
def test_golden_decided_point_cells_and_chances(decided, variant):
    for name, pred in zip(PHOTOS, decided[variant]):
        assert pred.decision == "within:750" and pred.views == "five"
        assert (pred.lat, pred.lon) == pytest.approx(DECIDED[variant][name], abs=1e-3), name
        assert [c.token for c in pred.top_k] == TOP_CELLS[variant][name], name
        assert pred.within_km == pytest.approx(WITHIN_KM[variant][name], abs=1e-3), name


@pytest.mark.parametrize("variant", ["fusion", "rgb"])
def test_golden_argmax_point(predictor, photos, variant):
    preds = predictor.predict_variants(photos, top_k=3, decision="argmax")[variant]
    for name, pred in zip(PHOTOS, preds):
        assert (pred.lat, pred.lon) == pytest.approx(ARGMAX[variant][name], abs=1e-3), name
        assert [c.token for c in pred.top_k] == TOP_CELLS[variant][name], name
