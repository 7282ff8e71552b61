"""Golden outputs of the checkpoint shipped in the package, for two photos shipped beside the demo.

The literals below were produced once by running, on CPU in this repository::

    Predictor.from_pretrained(device="cpu").predict_variants([Apple_iPhone_4.jpg, Nokia_Lumia_800.jpg], top_k=3)

(and again with ``decision="argmax"``), each variant encoding a photo from its own views (the centre crop it was
trained and cross-validated on). They are not targets: they pin what the code does
today. If this test fails, image loading, preprocessing, segmentation, the model or the embedded checkpoint
changed; check that the change is intended and, if it is, regenerate the numbers the same way and say why in the
commit message.
Needs nothing outside the package (the checkpoint, its DeepLab segmenter and the photos all ship in it).
"""

from importlib.resources import files

import pytest

from geosurge import Predictor

PHOTOS = ["Apple_iPhone_4.jpg", "Nokia_Lumia_800.jpg"]

#: variant -> the checkpoint's own decision rule (chosen by its cross-validation)
DECISION = {"fusion": "within:200", "rgb": "within:750"}
#: variant -> photo -> (lat, lon) under that rule
DECIDED = {
    "fusion": {"Apple_iPhone_4.jpg": (39.86586492333037, -75.57666156415962),
               "Nokia_Lumia_800.jpg": (24.017787226945835, 121.28374201292502)},
    "rgb": {"Apple_iPhone_4.jpg": (52.06701007291361, 4.308244798854633),
            "Nokia_Lumia_800.jpg": (52.06701007291361, 4.308244798854633)},
}
#: variant -> photo -> (lat, lon) of the paper's product rule (argmax); moves with any change in the scores
ARGMAX = {
    "fusion": {"Apple_iPhone_4.jpg": (41.87922979487388, -87.63334056569636),
               "Nokia_Lumia_800.jpg": (22.28927335177531, 114.17305749203935)},
    "rgb": {"Apple_iPhone_4.jpg": (52.84635616975732, -8.65494804197586),
            "Nokia_Lumia_800.jpg": (55.88406711973906, -4.225584411845037)},
}
#: variant -> photo -> S2 tokens of the three best finest cells by product score
TOP_CELLS = {
    "fusion": {"Apple_iPhone_4.jpg": ["880fd4", "880f9", "880ff"], "Nokia_Lumia_800.jpg": ["79", "7f", "7d"]},
    "rgb": {"Apple_iPhone_4.jpg": ["488d", "48894", "48884"], "Nokia_Lumia_800.jpg": ["48884", "7f", "4889c"]},
}
#: variant -> photo -> calibrated chance that the truth lies within R km of the decided point
WITHIN_KM = {
    "fusion": {
        "Apple_iPhone_4.jpg": {1: 3e-06, 25: 3e-06, 200: 0.044145, 750: 0.158486, 2500: 0.307719},
        "Nokia_Lumia_800.jpg": {1: 7e-06, 25: 7e-06, 200: 0.029756, 750: 0.029756, 2500: 0.141024},
    },
    "rgb": {
        "Apple_iPhone_4.jpg": {1: 9.2e-06, 25: 1.28e-05, 200: 0.012721, 750: 0.190424, 2500: 0.408683},
        "Nokia_Lumia_800.jpg": {1: 6.2e-06, 25: 8.6e-06, 200: 0.009596, 750: 0.124945, 2500: 0.340133},
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
        assert pred.decision == DECISION[variant] and pred.views == "center"
        assert (pred.lat, pred.lon) == pytest.approx(DECIDED[variant][name], abs=1e-3), name
        assert [c.token for c in pred.top_k] == TOP_CELLS[variant][name], name
        assert pred.within_km == pytest.approx(WITHIN_KM[variant][name], abs=1e-3), name


@pytest.mark.parametrize("variant", ["fusion", "rgb"])
def test_golden_argmax_point(predictor, photos, variant):
    preds = predictor.predict_variants(photos, top_k=3, decision="argmax")[variant]
    for name, pred in zip(PHOTOS, preds):
        assert (pred.lat, pred.lon) == pytest.approx(ARGMAX[variant][name], abs=1e-3), name
        assert [c.token for c in pred.top_k] == TOP_CELLS[variant][name], name
