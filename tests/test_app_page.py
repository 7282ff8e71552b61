"""What the page says, without a server: the nearest training photo (Flickr, local, none near), the level
table's labels and its note, cached steps, the evidence sentence, refusals said once."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from geosurge.app.reference import FlickrPhoto, reference_caption, reference_html
from geosurge.app.settings import parse_settings
from geosurge.app.ui import Locator, level_table
from geosurge.model.embedded import EMBEDDED_CHECKPOINT
from geosurge.model.decode import POSTERIOR_PROBABILITY, PRODUCT_SCORE
from geosurge.model.hierarchical import NEAR_REFERENCE_KM
from geosurge.predictor import CellScore, Predictor, ReferenceMatch

from .app_testing import png_header_bomb

NAME = "1000269685_e60e9cdfb4_1125_78841376@N00.jpg"  # the first photo of the embedded reference index


def test_every_reference_of_the_embedded_checkpoint_is_a_flickr_photo():
    ids = json.loads((EMBEDDED_CHECKPOINT / "fusion" / "reference.json").read_text())["ids"]
    assert NAME in ids and all(FlickrPhoto.from_name(i) is not None for i in ids)
    p = FlickrPhoto.from_name(NAME)
    assert p.thumbnail_url == "https://live.staticflickr.com/1125/1000269685_e60e9cdfb4_m.jpg"
    assert p.page_url == "https://www.flickr.com/photos/78841376@N00/1000269685"
    assert p.owner_url == "https://www.flickr.com/people/78841376@N00"
    assert FlickrPhoto.from_name("IMG_0001.jpg") is None and FlickrPhoto.from_name("1_x_2_3@N00.jpg") is None


def test_nearest_training_photo_from_flickr_locally_or_none(tmp_path):
    near = ReferenceMatch(NAME, 48.85, 2.35, 0.42, 120.0, True)
    box = reference_html(near, None)
    assert 'src="https://live.staticflickr.com/1125/1000269685_e60e9cdfb4_m.jpg"' in box
    assert 'href="https://www.flickr.com/photos/78841376@N00/1000269685"' in box and 'alt=""' in box
    assert "geosurge-ref-placeholder" in box and "onerror" in box  # what shows when Flickr is out of reach
    caption = reference_caption(near)
    assert "**120 km** from the answer" in caption and "(https://www.flickr.com/people/78841376@N00)" in caption
    # the training photos on this machine win: served by the app, no request to Flickr
    (tmp_path / NAME).write_bytes(b"jpeg")
    local = reference_html(near, tmp_path)
    assert "gradio_api/file=" in local and "staticflickr" not in local
    # far from the answer: said plainly, no photo
    far = replace(near, distance_km=16_543.0, in_predicted_cell=False)
    assert "<img" not in reference_html(far, tmp_path) and "No training photo near the answer" in reference_html(far, tmp_path)
    assert "No training photo near the answer" in reference_caption(far) and "16,543 km" in reference_caption(far)
    assert reference_caption(near).startswith("In the answer's cell: taken at 48.8500, 2.3500")
    assert "the most similar within 750 km" in reference_caption(replace(near, in_predicted_cell=False))
    edge = replace(near, distance_km=NEAR_REFERENCE_KM)
    assert "<img" in reference_html(edge, None)
    assert "no reference index" in reference_caption(None) and "<img" not in reference_html(None, None)


def _cell(level, token, score):
    return CellScore(level, 0, token, 10.0, 20.0, score)


def test_level_table_says_what_ranks_each_column_and_why_a_runner_up_can_beat_the_answer():
    from types import SimpleNamespace

    pred = SimpleNamespace(ranked_by=POSTERIOR_PROBABILITY, decision="within:750",
                           chain=[_cell(1, "84", 0.215), _cell(2, "81", 0.16)],
                           runners_up=[[_cell(1, "1", 0.24), _cell(1, "8c", 0.1)], [_cell(2, "14", 0.09)]])
    rows = level_table(pred)
    assert rows[0] == "| level | the answer's cell | its probability | other cells, ranked by probability |"
    assert "0.24\u00a0↑" in rows[2] and "↑" not in rows[3]  # marked only where it beats the answer's own cell
    assert "a higher probability than the answer's own cell at level 1:" in rows[-1]
    assert "the most chance within 750 km" in rows[-1]
    pred.runners_up = [[_cell(1, "1", 0.2)], [_cell(2, "14", 0.09)]]
    assert "↑" not in "\n".join(level_table(pred))  # no note without a reason for one
    product = SimpleNamespace(ranked_by=PRODUCT_SCORE, decision="argmax", chain=pred.chain,
                              runners_up=[[_cell(1, "1", 0.3)], []])
    rows = level_table(product)
    assert "ranked by product score" in rows[0] and "a higher product score than" in rows[-1] and "the most probable cell" in rows[-1]


@pytest.fixture(scope="module")
def locator():
    return Locator(Predictor.from_pretrained(), parse_settings([]))


def test_refusal_is_said_once_in_the_projects_words(locator, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_bomb(30000, 30000))
    a = locator(str(bomb))
    assert a.refused and not a.predictions
    assert a.summary.count("cannot be used") == 1 and "cannot be used" not in a.map_html + a.reference + a.reference_caption
    assert "too many pixels" in a.summary and "DOS attack" not in a.summary


def test_cached_segmentation_and_the_evidence_sentence(locator):
    photo = parse_settings([]).examples[2]
    first = locator(str(photo), fusion=True)
    again = locator(str(photo), fusion=False)
    assert "segmentation cached" not in first.summary and "segmentation cached" in again.summary
    pred = first.predictions["fusion"]
    said = pred.evidence_text[0].upper() + pred.evidence_text[1:] + "."
    assert said in first.summary and f"{pred.evidence_bits:.2g} bit" in said
    # the answer, its chances and the evidence come first, before the model and the table
    assert first.summary.index(said) < first.summary.index("Model:") < first.summary.index("| level |")
