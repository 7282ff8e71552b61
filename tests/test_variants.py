"""geosurge.model.variants (the fusion/RGB variants' names) and geosurge.model.checkpoint_dir (the one owner of a
checkpoint directory: where each variant's directory is, its config read once, where its training photos were,
its posterior written back)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from geosurge.geo import build_hierarchy
from geosurge.model import GeoSURGE
from geosurge.model.checkpoint import CONFIG, CheckpointError, save_checkpoint
from geosurge.model.embedded import EMBEDDED_CHECKPOINT
from geosurge.model.checkpoint_dir import CheckpointDir, training_images
from geosurge.model.config import PosteriorConfig
from geosurge.model.variants import FUSION, RGB, TRAINING_IMAGES, VARIANTS, get_variant, pick_variants, training_metadata, variant_name

from .helpers import small_config

REPO = Path(__file__).resolve().parents[1]


def _config_only(directory: Path, variant: str, training: dict | None = None) -> Path:
    """A checkpoint directory holding only the embedded ``variant``'s config.json (all discovery reads)."""
    directory.mkdir(parents=True)
    cfg = json.loads((EMBEDDED_CHECKPOINT / variant / CONFIG).read_text())
    if training is not None:
        cfg["training"] = training
    (directory / CONFIG).write_text(json.dumps(cfg))
    return directory


@pytest.fixture
def rgb_model():
    rng = np.random.default_rng(0)
    hierarchy = build_hierarchy(rng.uniform(-60, 60, 200), rng.uniform(-180, 180, 200), 5, [400, 100, 30])
    return GeoSURGE(small_config(False, Path("unused")), hierarchy.num_cells).eval(), hierarchy


def test_variants_are_named_once_in_display_order():
    assert list(VARIANTS) == [FUSION, RGB] == ["fusion", "rgb"]
    assert [v.name for v in VARIANTS.values()] == list(VARIANTS)
    assert VARIANTS[FUSION].fusion and not VARIANTS[RGB].fusion
    assert variant_name(True) == FUSION and variant_name(False) == RGB
    assert all(variant_name(v.fusion) == v.name for v in VARIANTS.values())
    assert get_variant("rgb") is VARIANTS[RGB]
    with pytest.raises(ValueError, match="unknown variant 'RGB': choose from 'fusion', 'rgb'"):
        get_variant("RGB")


def test_the_embedded_checkpoint_is_a_pair():
    dirs = variant_dirs(EMBEDDED_CHECKPOINT)
    assert list(dirs) == ["fusion", "rgb"]
    assert dirs == {v: EMBEDDED_CHECKPOINT / v for v in VARIANTS}
    assert variant_dir(EMBEDDED_CHECKPOINT, RGB) == EMBEDDED_CHECKPOINT / "rgb"


def test_pair_members_single_directories_and_half_pairs(tmp_path):
    pair = tmp_path / "pair"
    _config_only(pair / "rgb", RGB)
    _config_only(pair / "fusion", FUSION)
    assert list(variant_dirs(pair).items()) == [("fusion", pair / "fusion"), ("rgb", pair / "rgb")]  # display order
    assert variant_dir(pair, FUSION) == pair / "fusion" and variant_dir(pair, RGB) == pair / "rgb"
    # one member of a pair is a checkpoint directory of its own, keyed by the variant its config describes
    assert variant_dirs(pair / "rgb") == {"rgb": pair / "rgb"}
    assert variant_dirs(pair / "fusion") == {"fusion": pair / "fusion"}
    # a single directory is the answer whichever variant is asked for (evaluate --checkpoint ckpt/rgb)
    assert variant_dir(pair / "rgb", FUSION) == pair / "rgb"
    half = tmp_path / "half"
    _config_only(half / "rgb", RGB)
    (half / "fusion").mkdir()  # no config.json: not a member
    assert variant_dirs(half) == {"rgb": half / "rgb"}


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no GeoSURGE checkpoint \(config.json, or fusion/ or rgb/ sub-directories\)"):
        variant_dirs(tmp_path)
    half = tmp_path / "half"
    _config_only(half / "rgb", RGB)
    with pytest.raises(FileNotFoundError, match="is not a checkpoint .no config.json. nor a pair with a fusion/ checkpoint"):
        variant_dir(half, FUSION)
    with pytest.raises(ValueError, match="unknown variant 'both'"):
        variant_dir(half, "both")
    swapped = tmp_path / "swapped"
    _config_only(swapped / "fusion", RGB)
    with pytest.raises(CheckpointError, match=f"holds the 'rgb' variant .*: move it to {re.escape(str(swapped / 'rgb'))}$"):
        variant_dirs(swapped)


def test_training_photos_round_trip_through_a_checkpoint(tmp_path, rgb_model):
    model, hierarchy = rgb_model
    photos = tmp_path / "photos"
    photos.mkdir()
    ckpt = save_checkpoint(tmp_path / "ckpt", model, hierarchy, extra={"steps": 3, **training_metadata(photos)})
    saved = json.loads((ckpt / CONFIG).read_text())["training"]
    assert saved == {"steps": 3, TRAINING_IMAGES: str(photos.resolve())}
    assert training_images(ckpt) == photos.resolve()
    # a pair: the first member that says
    pair = tmp_path / "pair"
    save_checkpoint(pair / "rgb", model, hierarchy, extra=training_metadata(photos))
    assert training_images(pair) == photos.resolve()
    # recorded as absolute, so moving to another working directory does not lose it
    assert Path(saved[TRAINING_IMAGES]).is_absolute()
    # the folder is gone on this machine: no reference images rather than a broken path
    shutil.rmtree(photos)
    assert training_images(ckpt) is None


def test_shard_training_records_no_photo_folder(tmp_path, rgb_model):
    model, hierarchy = rgb_model
    meta = training_metadata(None)
    assert meta == {TRAINING_IMAGES: None}
    # an explicit None wins over the training config (msgpack ids are no file names)
    extra = {**meta, "config": {"data": {"images": str(tmp_path)}}}
    assert training_images(save_checkpoint(tmp_path / "ckpt", model, hierarchy, extra=extra)) is None


def test_older_checkpoints_fall_back_to_their_training_config(tmp_path):
    beside = tmp_path / "data"
    (beside / "images").mkdir(parents=True)
    named = _config_only(tmp_path / "named", RGB, {"config": {"data": {"images": str(beside), "train_csv": "x.csv"}}})
    assert training_images(named) == beside
    # no folder named: the records reader's default, an images/ folder beside the CSV, else the CSV's own folder
    csv_only = _config_only(tmp_path / "csv", RGB, {"config": {"data": {"train_csv": str(beside / "train.csv")}}})
    assert training_images(csv_only) == beside / "images"
    (beside / "images").rmdir()
    assert training_images(csv_only) == beside
    assert training_images(_config_only(tmp_path / "bare", RGB, {"steps": 1})) is None


def test_not_a_local_checkpoint_has_no_training_photos(tmp_path):
    assert training_images(tmp_path) is None
    assert training_images(Path("org/not-downloaded")) is None  # a Hub repo id: the app then shows none


def test_embedded_checkpoint_finds_the_shared_training_photos(shared_dir):
    if shared_dir.resolve() != (REPO / ".." / "shared").resolve():
        pytest.skip("the embedded checkpoint's config names ../shared, and $GEOSURGE_SHARED points elsewhere")
    # recorded relative to the repository (../shared beside the checkout), so any clone finds the photos
    assert json.loads((EMBEDDED_CHECKPOINT / "fusion" / CONFIG).read_text())["training"][TRAINING_IMAGES] == \
        "../shared/data/im2gps3k-dev/images"
    assert training_images(EMBEDDED_CHECKPOINT).resolve() == (shared_dir / "data/im2gps3k-dev/images").resolve()


def variant_dirs(path: Path) -> dict[str, Path]:
    return {name: v.path for name, v in CheckpointDir.read(path).variants.items()}


def variant_dir(path: Path, name: str) -> Path:
    return CheckpointDir.read(path).variant(name).path


def test_pick_variants_answers_with_what_is_available():
    assert pick_variants([FUSION, RGB], True) == (FUSION, RGB)
    assert pick_variants([RGB, FUSION], False) == (RGB, FUSION)
    assert pick_variants([RGB], True) == (RGB, None)  # fusion asked for but unavailable: the RGB-only answer
    assert pick_variants([FUSION], False) == (FUSION, None)  # a fusion-only checkpoint still answers
    with pytest.raises(ValueError, match="no variant"):
        pick_variants([], True)


def test_config_is_read_once_and_again_only_when_it_changes(tmp_path, monkeypatch):
    import geosurge.model.checkpoint_dir as cd

    pair = tmp_path / "pair"
    _config_only(pair / "rgb", RGB)
    _config_only(pair / "fusion", FUSION)
    reads = []
    real = cd.read_config
    monkeypatch.setattr(cd, "read_config", lambda d: reads.append(Path(d).name) or real(d))
    first = CheckpointDir.read(pair)
    training_images(pair)
    assert CheckpointDir.read(pair) is first and sorted(reads) == ["fusion", "rgb"]
    # what the app asks at start (variants, segmenter settings, training photos) parses nothing again
    assert first.variant(FUSION).segmenter_config().name == "deeplab-ade20k" and len(reads) == 2
    cfg = json.loads((pair / "rgb" / CONFIG).read_text())
    cfg["training"] = {"steps": 9}
    (pair / "rgb" / CONFIG).write_text(json.dumps(cfg, indent=1))
    assert CheckpointDir.read(pair).variants[RGB].training == {"steps": 9} and sorted(reads[2:]) == ["fusion", "rgb"]


def test_write_posterior_round_trips_and_validates(tmp_path, rgb_model):
    model, hierarchy = rgb_model
    vd = CheckpointDir.read(save_checkpoint(tmp_path / "ckpt", model, hierarchy)).variant(RGB)
    assert vd.posterior(hierarchy) is None and vd.training_counts() is None
    counts = [np.arange(n) % 3 for n in hierarchy.num_cells]
    pc = PosteriorConfig(enabled=True, level_weights=[0.5, 0.2, 0.1], decision="within:750",
                         calibration={"within:750@2500": [[0.0, 1.0], [0.1, 0.6]]})
    vd.write_posterior(pc, counts)
    back = CheckpointDir.read(tmp_path / "ckpt").variant(RGB)
    assert back.model_config().posterior == pc
    assert [c.tolist() for c in back.training_counts()] == [c.tolist() for c in counts]
    assert back.posterior(hierarchy).cfg.decision == "within:750"
    with pytest.raises(ValueError, match="posterior.decision"):
        vd.write_posterior(PosteriorConfig(enabled=True).__class__(**{**pc.__dict__, "decision": "best"}))


def test_a_checkpoint_naming_an_unknown_part_fails_when_read(tmp_path):
    d = _config_only(tmp_path / "odd", RGB)
    cfg = json.loads((d / CONFIG).read_text())
    cfg["model"]["backbone"]["name"] = "resnet-9000"
    (d / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"backbone.name must be one of \['clip', .*'efficientnet-lite0'.*not 'resnet-9000'"):
        CheckpointDir.read(d)


def test_the_app_reads_each_config_once_at_start(monkeypatch):
    import geosurge.model.checkpoint_dir as cd
    from geosurge import Predictor
    from geosurge.app.settings import parse_settings

    opened, real = [], Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (opened.append(self) if self.name == CONFIG else None)
                        or real(self, *a, **k))
    cd._read.cache_clear()  # as in a fresh process
    settings = parse_settings(["--checkpoint", str(EMBEDDED_CHECKPOINT)])  # asks for the training photos' folder
    Predictor.from_pretrained(settings.checkpoint, segmenter=None)  # loads both variants
    assert sorted(p.parent.name for p in opened) == ["fusion", "rgb"]
