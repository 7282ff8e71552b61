"""Validation during training: the model's accuracy on held-out photos at every epoch end (early stopping)."""
from __future__ import annotations

import numpy as np
import torch

from ..data.records import GeoRecords, SkipReport
from ..geo.hierarchy import Hierarchy
from ..geo.metrics import accuracy_report
from ..model.encode import image_features, view_features
from ..model.decode import Decoder
from ..model.geosurge import GeoSURGE
from ..model.views import ViewSet


def validation_scores(model: GeoSURGE, hierarchy: Hierarchy, feats: torch.Tensor, true: np.ndarray) -> dict[str, float]:
    """Accuracy report (``geosurge.geo.metrics`` names) of the answers to ``feats`` against ``true`` (n, 2)."""
    pred = Decoder.for_model(model, hierarchy).to(feats.device)(feats).latlon
    return accuracy_report(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1]).as_dict()


class Validator:
    """Scores of the model on the validation photos: view-averaged features of cached views, or centre crops of the
    images (whose unreadable photos are reported once, at the first validation)."""

    def __init__(self, hierarchy: Hierarchy, device: torch.device, val_rec: GeoRecords, val_views: ViewSet | None = None,
                 val_store=None, skipped: SkipReport | None = None):
        self.hierarchy, self.device, self.val_rec = hierarchy, device, val_rec
        self.val_views, self.val_store, self.skipped = val_views, val_store, skipped
        self.reported = False

    def __call__(self, model: GeoSURGE) -> dict[str, float]:
        model.eval()
        feats, keep = self._features(model)
        model.train()
        true = np.stack([self.val_rec.lats[keep], self.val_rec.lons[keep]], 1)
        return validation_scores(model, self.hierarchy, feats.to(self.device), true)

    def _features(self, model: GeoSURGE) -> tuple[torch.Tensor, np.ndarray]:
        if self.val_views is not None:
            return view_features(model, self.val_views), self.val_views.keep
        feats, keep = image_features(model, self.val_rec, self.val_store, report=None if self.reported else self.skipped)
        self.reported = True
        return feats, keep
