"""The nearest training photo as the page shows it: from this machine's copy of the training photos when
there is one, else hot-linked from Flickr with a link back to the photo and its owner (as Flickr asks of
anyone showing its photos; nothing is copied or redistributed), else a plain placeholder.

The training photos cannot ship with the package, but IM2GPS3k and MP-16 name each photo by its Flickr
identity (``{id}_{secret}_{server}_{owner}.jpg``), which is all a browser needs to fetch the thumbnail from
Flickr itself. A visitor offline (or behind a filter) sees the placeholder, never a broken image.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..model.hierarchical import NEAR_REFERENCE_KM

_FLICKR_NAME = re.compile(r"^(?P<id>\d+)_(?P<secret>[0-9a-f]+)_(?P<server>\d+)_(?P<owner>\d+@N\d\d)\.jpe?g$")


@dataclass(frozen=True)
class FlickrPhoto:
    """A Flickr photo named the IM2GPS3k / MP-16 way."""

    id: str
    secret: str
    server: str
    owner: str  # the owner's NSID, e.g. 78841376@N00

    @classmethod
    def from_name(cls, name: str) -> FlickrPhoto | None:
        """The photo a training file name stands for, or None when the name is not a Flickr one."""
        m = _FLICKR_NAME.match(Path(name).name)
        return cls(m["id"], m["secret"], m["server"], m["owner"]) if m else None

    @property
    def thumbnail_url(self) -> str:
        """Flickr's 240-pixel rendition ("m"), served by Flickr to the visitor's browser."""
        return f"https://live.staticflickr.com/{self.server}/{self.id}_{self.secret}_m.jpg"

    @property
    def page_url(self) -> str:
        return f"https://www.flickr.com/photos/{self.owner}/{self.id}"  # "@" is allowed in a path; the name pattern admits nothing else

    @property
    def owner_url(self) -> str:
        return f"https://www.flickr.com/people/{self.owner}"


def reference_caption(ref, near_km: float = NEAR_REFERENCE_KM) -> str:
    """Markdown: which training photo is shown, where it was taken and how far from the answer; or that none is
    near the answer (within ``near_km``, the radius the predictor searches when the answer's cell has none).
    ``ref`` is a :class:`~geosurge.predictor.ReferenceMatch` or None."""
    if ref is None:
        return "This checkpoint has no reference index, so no training photo can be shown."
    if ref.distance_km > near_km:
        return (f"**No training photo near the answer**: the best match was taken {ref.distance_km:,.0f} km away (more "
                f"than {near_km:,.0f} km), too far to say anything about this place.")
    where = "In the answer's cell" if ref.in_predicted_cell else f"None in the answer's cell; the most similar within {near_km:,.0f} km"
    text = (f"{where}: taken at {ref.lat:.4f}, {ref.lon:.4f}, **{ref.distance_km:,.0f} km** from the answer (visual "
            f"similarity {ref.similarity:.2f}).")
    flickr = FlickrPhoto.from_name(ref.id)
    if flickr is not None:
        text += f" [The photo on Flickr]({flickr.page_url}), by [{flickr.owner}]({flickr.owner_url})."
    else:
        text += f" `{ref.id}`"
    return text


def reference_html(ref, local_root: Path | None, near_km: float = NEAR_REFERENCE_KM) -> str:
    """The picture box: the local copy (served by the app from ``local_root``), else Flickr's thumbnail over
    a placeholder that shows through when the browser cannot load it, else the placeholder alone."""
    if ref is None or ref.distance_km > near_km:
        return _box(None, "No training photo near the answer.")
    if local_root is not None and (local_root / ref.id).is_file():
        # Gradio serves files under its allowed paths (the settings add the training photo folder)
        src = "gradio_api/file=" + quote(str((local_root / ref.id).resolve()))
        return _box(src, "The training photo could not be loaded.", link=None)
    flickr = FlickrPhoto.from_name(ref.id)
    if flickr is None:
        return _box(None, "The training photos are not on this server.")
    return _box(flickr.thumbnail_url, "Flickr's thumbnail cannot be loaded here (no connection to Flickr); "
                "the link below leads to the photo.", link=flickr.page_url)


def _box(src: str | None, placeholder: str, link: str | None = None) -> str:
    # A failed image removes itself (onerror), which lets the page's CSS show the placeholder (shown only in a box
    # without an image); its empty alt keeps any browser from drawing a broken-image icon meanwhile.
    img = ""
    if src is not None:
        img = (f'<img class="geosurge-ref-img" src="{html.escape(src)}" alt="" referrerpolicy="no-referrer" '
               'onerror="this.remove()">')
        if link is not None:
            img = f'<a href="{html.escape(link)}" target="_blank" rel="noopener noreferrer">{img}</a>'
    return ('<div class="geosurge-ref-title"><strong>Nearest training photo</strong></div>'
            f'<div class="geosurge-ref"><div class="geosurge-ref-placeholder">{html.escape(placeholder)}</div>{img}</div>')
