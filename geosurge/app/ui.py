"""The Gradio Blocks UI and the request handler behind it (kept free of Gradio so tests can call it)."""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.images import ImageLoadError, load_image
from ..geo.distance import haversine_km
from ..geo.geocode import place_names
from ..model.decisions import describe_decision
from ..model.decode import POSTERIOR_PROBABILITY
from ..model.segmenters.palette import overlay
from ..model.variants import FUSION, VARIANTS, pick_variants
from ..predictor import Predictor
from ..data.exif import ExifGps, read_exif_gps
from .geomap import prediction_map
from .reference import reference_caption, reference_html
from .settings import AppSettings
from .uploads import Upload

TITLE = "GeoSURGE: where on Earth was this photo taken?"
#: What a visitor reads first (on a phone too): the rest of the explanation waits behind "How it works".
LEAD = ("Upload a photo, or pick an example below (they carry the GPS position where they were taken): the answer, "
        "how likely it is to be right, and how much the photo itself told the model.")
INTRO = (
    "GeoSURGE scores every cell of a 7-level hierarchy of S2 cells, combines that visual evidence with where "
    "Flickr photos are taken (MP-16), and says how likely the answer is to be within 1 to 2,500 km, with chances "
    "checked on photographers it never saw. The map shows the regions holding 50 % and 90 % of the probability, "
    "the best cells of every level (the layer button on the map toggles levels; hover a cell for its product "
    "score), the predicted point, and, when the photo carries EXIF GPS, the true point and the error. EXIF is "
    "only ever used to draw the truth, and never served back. The sentence under the chances says how much the photo "
    "itself told the model beyond where Flickr photos are taken (in bits: the information its answer adds to that "
    "prior); when it is little, the answer mostly follows the prior. The nearest training photo is one the model "
    "learned from, taken near the answer; its thumbnail comes from Flickr, with a link to the photo and its owner."
)
#: The one sentence a visitor reads when the fusion model cannot run on this server (the reason goes to the log).
FUSION_OFF = "Semantic fusion is not available on this server, so this answer comes from the RGB-only model."
PRIVACY = ("Uploads are kept only in memory and as a copy without metadata on this server, deleted after "
           "{minutes} minutes and when the server stops.")


@dataclass
class Answer:
    """Everything the UI shows for one photo."""

    map_html: str
    summary: str
    overlay: Image.Image | None
    reference: str  # HTML: the nearest training photo, or a placeholder (see .reference)
    reference_caption: str
    predictions: dict[str, Any]  # variant -> Prediction
    refused: bool = False  # the file cannot be used: the photo box is cleared, so it shows no broken image


#: The map box before there is an answer (and after a refusal, which the answer box states once).
NO_MAP = '<div class="geosurge-message" style="padding:2em;text-align:center">The map appears here once a photo is located.</div>'


def message(text: str, refused: bool = False) -> Answer:
    """No answer: ``text`` is said once, in the answer box."""
    return Answer(NO_MAP, f"**{text}**", None, "", "", {}, refused)


def refusal(reason: str) -> Answer:
    return message(f"This file cannot be used: {reason.rstrip('.')}.", refused=True)


class Locator:
    """Loads the model once; answers photos. Segmentations are memoized per image content, so flipping
    the fusion toggle re-renders without segmenting again."""

    def __init__(self, predictor: Predictor, settings: AppSettings, cache_size: int = 32):
        self.predictor, self.settings = predictor, settings
        self._seg: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.cache_size = cache_size

    def warm_up(self) -> float:
        """Answer one synthetic photo, so the first visitor does not pay for loading the gazetteer
        (~2 s) and the first runs of the models; returns the seconds it took."""
        import tempfile

        t = time.perf_counter()
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "warm-up.jpg"
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
            self(str(path))
        with self._lock:
            self._seg.clear()  # keep the cache for real photos
        return time.perf_counter() - t

    @property
    def fusion_note(self) -> str | None:
        return self.predictor.fusion_unavailable_reason()

    def _cached_labels(self, key: str) -> np.ndarray | None:
        """The label map of a photo segmented before (None: not cached, or no segmenter)."""
        with self._lock:
            if key in self._seg:
                self._seg.move_to_end(key)
                return self._seg[key]
        return None

    def _remember_labels(self, key: str, labels: np.ndarray) -> None:
        with self._lock:
            self._seg[key] = labels
            while len(self._seg) > self.cache_size:
                self._seg.popitem(last=False)

    def __call__(self, photo: str | Path | Upload | None, fusion: bool = True) -> Answer:
        """Answer one photo: a path (tests, warm-up) or an :class:`Upload` from the UI."""
        if not photo:
            return message("Upload a photo to locate it.")
        t0 = time.perf_counter()
        if isinstance(photo, Upload) and photo.error:
            return refusal(photo.error)
        try:
            if isinstance(photo, Upload):
                img, key, gps = photo.image, photo.digest, photo.gps
            else:
                raw = Path(photo).read_bytes()
                img, key, gps = load_image(raw), hashlib.sha1(raw).hexdigest(), read_exif_gps(raw)
        except ImageLoadError as e:
            return refusal(str(e))
        except OSError as e:
            return refusal(f"it could not be read ({e.strerror or e})")
        truth = gps.point if gps else None
        stages: dict[str, float | None] = {}  # shown under the answer: where the time went (None: cached)
        labels = self._cached_labels(key)
        t = time.perf_counter()
        # Not cached: the Predictor segments beside the backbone pass, so the two share one stage.
        preds = {k: v[0] for k, v in self.predictor.predict_variants(
            img, level_top=5, label_maps=None if labels is None else [labels]).items()}
        if labels is not None:
            stages["segmentation"] = None
        elif FUSION in preds:
            labels = preds[FUSION].labels
            self._remember_labels(key, labels)
        stages["models" if labels is None or "segmentation" in stages else "segmentation and models"] = time.perf_counter() - t
        t = time.perf_counter()
        if not preds:
            return message("This checkpoint has no model that can run here: its fusion model needs the segmenter.")
        primary, other = pick_variants(preds, fusion)
        pred = preds[primary]
        hierarchy = self.predictor.variants[primary].hierarchy
        html = prediction_map(pred, hierarchy, primary, preds.get(other), other, truth,
                              online_tiles=self.settings.online_tiles)
        stages["map"], t = time.perf_counter() - t, time.perf_counter()
        ov = overlay(img, labels) if labels is not None else None
        stages["overlay"] = time.perf_counter() - t
        summary = self._summary(preds, primary, other, gps, fusion, time.perf_counter() - t0, stages)
        ref = pred.nearest_reference
        return Answer(html, summary, ov, reference_html(ref, self.settings.reference_images), reference_caption(ref), preds)

    def _summary(self, preds, primary, other, gps: ExifGps | None, fusion_asked, seconds, stages) -> str:
        pred = preds[primary]
        place = place_names([pred.lat], [pred.lon])[0]
        name = {v: spec.description for v, spec in VARIANTS.items()}
        lines = [f"### {pred.lat:.4f}, {pred.lon:.4f} — {place}", chances_headline(pred), evidence_line(pred),
                 f"Model: **{name[primary]}** · answer chosen by {describe_decision(pred.decision)}"]
        if FUSION not in preds:
            lines.append(FUSION_OFF)
        if other is not None:
            o = preds[other]
            d = float(haversine_km(pred.lat, pred.lon, o.lat, o.lon))
            lines.append(f"{name[other][0].upper() + name[other][1:]}: {o.lat:.4f}, {o.lon:.4f} ({place_names([o.lat], [o.lon])[0]}), "
                         f"**{d:,.0f} km** from the {VARIANTS[primary].label} prediction (both on the map).")
        if gps is not None and gps.point is not None:
            err = float(haversine_km(pred.lat, pred.lon, *gps.point))
            lines.append(f"EXIF GPS of the upload: {gps.lat:.4f}, {gps.lon:.4f} — error **{err:,.0f} km** "
                         "(EXIF is shown, never used by the model).")
        elif gps is not None:
            lines.append(f"The photo's EXIF GPS cannot be shown: {gps.problem}.")
        lines = ["\n\n".join(lines), ""]  # separate paragraphs in Markdown
        lines.extend(level_table(pred))
        parts = ", ".join(f"{name} {'cached' if sec is None else f'{sec * 1000:.0f} ms'}" for name, sec in stages.items())
        lines.append(f"\n<small>answered in {seconds * 1000:.0f} ms ({parts})</small>")
        return "\n".join(lines)


def chances_headline(pred) -> str:
    """"**62 %** within 2,500 km · 21 % within 750 km · …": the calibrated chances, widest radius first."""
    if not pred.within_km:
        return (f"Score of the best finest cell (product over the {len(pred.levels)} levels): **{pred.score:.3g}** "
                "(this checkpoint has no calibrated chances)")
    parts = [f"{100 * p:.0f} % within {r:,} km" for r, p in sorted(pred.within_km.items(), reverse=True)]
    return f"Chance the photo was taken **{parts[0]}** · " + " · ".join(parts[1:])


def evidence_line(pred) -> str:
    """How much the photo told the model beyond where Flickr photos are taken: ``Prediction.evidence_text``
    (its figure in bits included) as a sentence."""
    text = pred.evidence_text
    return f"{text[:1].upper()}{text[1:]}."


NBSP = "\u00a0"  # keeps a number and its neighbours on one line in narrow table cells


def level_table(pred) -> list[str]:
    """Markdown rows: per level (1 = coarsest) the cell holding the answer and its figure, then the other cells
    of that level by what ranks them (``Prediction.ranked_by``). A runner-up above the answer's own cell is
    marked, with a note saying why that happens."""
    what = "probability" if pred.ranked_by == POSTERIOR_PROBABILITY else pred.ranked_by
    lines = [f"| level | the answer's cell | its {what} | other cells, ranked by {what} |", "|---|---|---|---|"]
    above = []
    for k, c in enumerate(pred.chain):
        others = (pred.runners_up[k] if k < len(pred.runners_up) else [])[:3]
        if any(o.score > c.score for o in others):
            above.append(str(c.level))
        alt = "<br>".join(_runner_up(o, o.score > c.score) for o in others)
        lines.append(f"| {c.level} | {c.token} ({c.lat:.2f},{NBSP}{c.lon:.2f}) | {c.score:.3g} | {alt} |")
    if above:
        lines.append(f"\n<small>↑ a higher {what} than the answer's own cell at level {', '.join(above)}: the answer "
                     f"is chosen by {describe_decision(pred.decision)} over the finest cells, not level by level, so a "
                     f"coarser cell around it need not have the highest {what} of its level.</small>")
    return lines


def _runner_up(c, above: bool) -> str:
    # one line per cell (no-break spaces); where it lies is left out on a phone (CSS), the map shows it
    where = f'<span class="geosurge-where">({c.lat:.1f},{NBSP}{c.lon:.1f}){NBSP}</span>'
    return f"{c.token}{NBSP}{where}{c.score:.2g}{NBSP + '↑' if above else ''}"


#: The page's own CSS (passed to Gradio by the server). Phone first: below 640 px the two columns stack in
#: the order photo, Locate, answer, map, so the answer follows the button; tables keep words and numbers whole
#: (a runner-up's coordinates give way first, the map shows where it is) and scroll rather than overflow.
PAGE_CSS = """
#map .html-container, #reference .html-container { padding-left: 0; padding-right: 0; }  /* full column width */
#summary table { font-size: 0.9em; }
#summary th, #summary td { word-break: normal; overflow-wrap: normal; hyphens: none; padding: 4px 8px; }
#summary td:nth-child(4) { white-space: nowrap; }
#summary .prose, #summary > div { overflow-x: auto; }
.geosurge-ref { display: flex; justify-content: center; }
.geosurge-ref img { display: block; max-width: 100%; max-height: 320px; border-radius: 6px; }
.geosurge-ref-placeholder { display: none; }
.geosurge-ref:not(:has(img)) .geosurge-ref-placeholder {
  display: flex; align-items: center; justify-content: center; text-align: center; min-height: 120px; width: 100%;
  padding: 1em; border: 1px dashed #bbb; border-radius: 6px; color: #666; background: #f6f6f6; }
@media (max-width: 640px) {
  #summary h3 { font-size: 1.15em; }
  #summary th, #summary td { padding: 3px 4px; }
  #summary .geosurge-where { display: none; }
}
"""


def build_demo(locator: Locator, store=None):
    """The Blocks app. Desktop: photo, fusion toggle, Locate and the answer on the left; map, nearest training
    photo and segmentation overlay on the right; examples below. A phone reads the same top to bottom."""
    import gradio as gr

    from .components import PhotoInput, ResultImage
    from .uploads import UploadStore

    settings = locator.settings
    available = locator.fusion_note is None
    sweep = max(10, min(300, settings.delete_after_s // 4))
    privacy = PRIVACY.format(minutes=round(settings.delete_after_s / 60))
    with gr.Blocks(title="GeoSURGE", delete_cache=(sweep, settings.delete_after_s)) as demo:
        gr.Markdown(f"# {TITLE}\n{LEAD}\n\n<small>{privacy}</small>", elem_id="intro")
        with gr.Accordion("How it works", open=False):
            gr.Markdown(INTRO)
        with gr.Row(elem_id="main"):
            with gr.Column(scale=2, min_width=300):
                photo = PhotoInput(type="filepath", image_mode=None, label="Photo", sources=["upload", "clipboard"],
                                   elem_id="photo", height=320)
                PhotoInput.store = store or UploadStore(settings.max_upload_bytes, settings.delete_after_s,
                                                        public=list(settings.examples))
                fusion = gr.Checkbox(value=available, interactive=available,
                                     label="Semantic fusion",
                                     info=("Use the model that fuses the ADE20K segmentation with appearance; "
                                           "the other model's prediction is drawn too.") if available else None,
                                     elem_id="fusion")
                button = gr.Button("Locate", variant="primary", elem_id="locate")
                summary = gr.Markdown(elem_id="summary")
            with gr.Column(scale=3, min_width=300):
                map_html = gr.HTML(NO_MAP, elem_id="map")
                ref_html = gr.HTML(elem_id="reference", js_on_load=None)
                ref_caption = gr.Markdown(elem_id="reference-caption")
                overlay_img = ResultImage(label="ADE20K segmentation (main classes)", interactive=False, elem_id="overlay", format="jpeg")
        if settings.examples:
            gr.Examples([[str(p)] for p in settings.examples], inputs=[photo], examples_per_page=10,
                        label="Example photos with EXIF GPS (metadata-extractor-images; the true point is drawn)")

        def run(upload, use_fusion):
            a = locator(upload, bool(use_fusion))
            return a.map_html, a.summary, a.overlay, a.reference, a.reference_caption

        def run_new_photo(upload, use_fusion):
            # A refused file is cleared from the photo box (the browser would draw it as a broken image); the
            # change this causes comes back with no photo and must leave the refusal on the page.
            if upload is None:
                return [gr.skip()] * 6
            a = locator(upload, bool(use_fusion))
            return a.map_html, a.summary, a.overlay, a.reference, a.reference_caption, None if a.refused else gr.skip()

        # One answer at a time across the three events (one shared limit, not one each): a waiting visitor sees
        # the queue position and expected wait Gradio shows on the outputs.
        # One answer at a time across the three events (one shared limit, not one each): a waiting visitor sees
        # the queue position and expected wait Gradio shows on the outputs.
        outputs = [map_html, summary, overlay_img, ref_html, ref_caption]
        button.click(run, [photo, fusion], outputs, api_name="locate", concurrency_limit=1, concurrency_id="locate")
        photo.change(run_new_photo, [photo, fusion], outputs + [photo], api_name=False, concurrency_limit=1, concurrency_id="locate")  # uploads, examples
        fusion.change(run, [photo, fusion], outputs, api_name=False, concurrency_limit=1, concurrency_id="locate")
    return demo
