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
from ..model.segmenters.palette import overlay
from ..model.variants import FUSION, VARIANTS, pick_variants
from ..predictor import Predictor
from ..data.exif import ExifGps, read_exif_gps
from .geomap import prediction_map
from .settings import AppSettings
from .uploads import Upload

TITLE = "GeoSURGE: where on Earth was this photo taken?"
INTRO = (
    "Upload a photo (or pick one of the example photos, which carry the GPS position where they were taken). "
    "GeoSURGE scores every cell of a 7-level hierarchy of S2 cells, combines that visual evidence with where "
    "Flickr photos are taken (MP-16), and says how likely the answer is to be within 1 to 2,500 km, with chances "
    "checked on photographers it never saw. The map shows the regions holding 50 % and 90 % of the probability, "
    "the best cells of every level (the layer button on the map toggles levels; hover a cell for its product "
    "score), the predicted point, and, when the photo carries EXIF GPS, the true point and the error. EXIF is "
    "only ever used to draw the truth, and never served back."
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
    reference: Image.Image | None
    reference_caption: str
    predictions: dict[str, Any]  # variant -> Prediction


def message(text: str) -> Answer:
    return Answer(f'<div class="geosurge-message" style="padding:2em;text-align:center">{text}</div>', f"**{text}**",
                  None, None, "", {})


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

    def _labels(self, key: str, img: Image.Image) -> np.ndarray | None:
        if self.predictor.segmenter is None:
            return None
        with self._lock:
            if key in self._seg:
                self._seg.move_to_end(key)
                return self._seg[key]
        lab = self.predictor.segmenter(img)
        with self._lock:
            self._seg[key] = lab
            while len(self._seg) > self.cache_size:
                self._seg.popitem(last=False)
        return lab

    def __call__(self, photo: str | Path | Upload | None, fusion: bool = True) -> Answer:
        """Answer one photo: a path (tests, warm-up) or an :class:`Upload` from the UI."""
        if not photo:
            return message("Upload a photo to locate it.")
        t0 = time.perf_counter()
        if isinstance(photo, Upload) and photo.error:
            return message(f"This file cannot be used: {photo.error}")
        try:
            raw = photo.data if isinstance(photo, Upload) else Path(photo).read_bytes()
            img = photo.image if isinstance(photo, Upload) and photo.image is not None else load_image(raw)
        except (ImageLoadError, OSError) as e:
            return message(f"This file cannot be used: {e}")
        key = hashlib.sha1(raw).hexdigest()
        gps = photo.gps if isinstance(photo, Upload) else read_exif_gps(raw)
        truth = gps.point if gps else None
        stages = {}  # shown under the answer: where the time went
        t = time.perf_counter()
        labels = self._labels(key, img)
        stages["segmentation"], t = time.perf_counter() - t, time.perf_counter()
        maps = None if labels is None else [labels]
        preds = {k: v[0] for k, v in self.predictor.predict_variants(img, level_top=5, label_maps=maps).items()}
        stages["models"], t = time.perf_counter() - t, time.perf_counter()
        if not preds:
            return message("This checkpoint has no model that can run here: its fusion model needs the segmenter.")
        primary, other = pick_variants(preds, fusion)
        pred = preds[primary]
        hierarchy = self.predictor.variants[primary].hierarchy
        html = prediction_map(pred, hierarchy, primary, preds.get(other), other, truth,
                              online_tiles=self.settings.online_tiles)
        stages["map"], t = time.perf_counter() - t, time.perf_counter()
        ov = overlay(img, labels) if labels is not None else None
        ref_img, ref_caption = self._reference(pred)
        stages["overlay and reference"] = time.perf_counter() - t
        summary = self._summary(preds, primary, other, gps, fusion, time.perf_counter() - t0, stages)
        return Answer(html, summary, ov, ref_img, ref_caption, preds)

    def _summary(self, preds, primary, other, gps: ExifGps | None, fusion_asked, seconds, stages) -> str:
        pred = preds[primary]
        place = place_names([pred.lat], [pred.lon])[0]
        name = {v: spec.description for v, spec in VARIANTS.items()}
        lines = [f"### {pred.lat:.4f}, {pred.lon:.4f} — {place}", chances_headline(pred),
                 f"Model: **{name[primary]}** · answer chosen by {decision_words(pred.decision)}"]
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
        parts = ", ".join(f"{name} {sec * 1000:.0f} ms" for name, sec in stages.items())
        lines.append(f"\n<small>answered in {seconds * 1000:.0f} ms ({parts})</small>")
        return "\n".join(lines)

    def _reference(self, pred) -> tuple[Image.Image | None, str]:
        ref = pred.nearest_reference
        if ref is None:
            return None, "This checkpoint has no reference index."
        where = "in the predicted cell" if ref.in_predicted_cell else "overall (no training photo in the predicted cell)"
        caption = (f"Nearest training photo {where}: `{ref.id}` at {ref.lat:.4f}, {ref.lon:.4f}, "
                   f"{ref.distance_km:,.0f} km from the prediction (visual similarity {ref.similarity:.2f}).")
        root = self.settings.reference_images
        if root is None or not (root / ref.id).is_file():
            return None, caption + " (reference images are not available here)"
        try:
            img = load_image(root / ref.id)
        except ImageLoadError:
            return None, caption
        img.thumbnail((640, 640))
        return img, caption


def chances_headline(pred) -> str:
    """"**62 %** within 2,500 km · 21 % within 750 km · …": the calibrated chances, widest radius first."""
    if not pred.within_km:
        return (f"Score of the best finest cell (product over the {len(pred.levels)} levels): **{pred.score:.3g}** "
                "(this checkpoint has no calibrated chances)")
    parts = [f"{100 * p:.0f} % within {r:,} km" for r, p in sorted(pred.within_km.items(), reverse=True)]
    return f"Chance the photo was taken **{parts[0]}** · " + " · ".join(parts[1:])


def decision_words(decision: str) -> str:
    if decision.startswith("within:"):
        return f"the most chance within {float(decision.split(':')[1]):,.0f} km"
    if decision == "median":
        return "the least expected distance"
    return "the most probable cell"


def level_table(pred) -> list[str]:
    """Markdown rows: per level (1 = coarsest) the cell holding the answer and its probability, then runners-up."""
    what = "posterior probability" if pred.within_km else "product score"
    lines = [f"| level | cell holding the answer | {what} | runners-up |", "|---|---|---|---|"]
    for k, c in enumerate(pred.chain):
        others = pred.runners_up[k] if k < len(pred.runners_up) else []
        alt = ", ".join(f"{o.token} ({o.lat:.1f}, {o.lon:.1f}) {o.score:.2g}" for o in others[:3])
        lines.append(f"| {c.level} | {c.token} ({c.lat:.2f}, {c.lon:.2f}) | {c.score:.3g} | {alt} |")
    return lines


def build_demo(locator: Locator, store=None):
    """The Blocks app: photo + fusion toggle on the left; map, answer, overlay and reference on the right."""
    import gradio as gr

    from .components import PhotoInput, ResultImage
    from .uploads import UploadStore

    settings = locator.settings
    available = locator.fusion_note is None
    sweep = max(10, min(300, settings.delete_after_s // 4))
    with gr.Blocks(title="GeoSURGE", delete_cache=(sweep, settings.delete_after_s)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}\n\n<small>{PRIVACY.format(minutes=round(settings.delete_after_s / 60))}</small>")
        with gr.Row():
            with gr.Column(scale=2):
                photo = PhotoInput(type="filepath", image_mode=None, label="Photo", sources=["upload", "clipboard"], elem_id="photo")
                PhotoInput.store = store or UploadStore(settings.max_upload_bytes, settings.delete_after_s,
                                                        public=list(settings.examples))
                fusion = gr.Checkbox(value=available, interactive=available,
                                     label="Semantic fusion",
                                     info=("Use the model that fuses the ADE20K segmentation with appearance; "
                                           "the other model's prediction is drawn too.") if available else None,
                                     elem_id="fusion")
                button = gr.Button("Locate", variant="primary", elem_id="locate")
                if settings.examples:
                    gr.Examples([[str(p)] for p in settings.examples], inputs=[photo], examples_per_page=10,
                                label="Example photos with EXIF GPS (metadata-extractor-images; the true point is drawn)")
                overlay_img = ResultImage(label="ADE20K segmentation (main classes)", interactive=False, elem_id="overlay", format="jpeg")
            with gr.Column(scale=3):
                map_html = gr.HTML(message("Upload a photo to see where it was taken.").map_html, elem_id="map")
                summary = gr.Markdown(elem_id="summary")
                # Without the training photos on this machine (they cannot ship: only their ids and places do)
                # the box would stay empty; the caption still names the nearest one and where it was taken.
                ref_img = ResultImage(label="Nearest training photo", interactive=False, elem_id="reference", format="jpeg",
                                      visible=settings.reference_images is not None)
                ref_caption = gr.Markdown(elem_id="reference-caption")

        def run(upload, use_fusion):
            a = locator(upload, bool(use_fusion))
            return a.map_html, a.summary, a.overlay, a.reference, a.reference_caption

        outputs = [map_html, summary, overlay_img, ref_img, ref_caption]
        # One answer at a time across the three events (one shared limit, not one each): a waiting visitor sees
        # the queue position and expected wait Gradio shows on the outputs.
        button.click(run, [photo, fusion], outputs, api_name="locate", concurrency_limit=1, concurrency_id="locate")
        photo.change(run, [photo, fusion], outputs, api_name=False, concurrency_limit=1, concurrency_id="locate")  # uploads and examples
        fusion.change(run, [photo, fusion], outputs, api_name=False, concurrency_limit=1, concurrency_id="locate")
    return demo
