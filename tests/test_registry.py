"""The one registry shape behind backbones, segmenters and geographic heads."""
import pytest

from geosurge.model.backbones import list_backbones
from geosurge.model.geo_heads import list_geo_heads
from geosurge.model.registry import Registry
from geosurge.model.segmenters import list_segmenters


def test_register_list_get_and_unknown_names():
    reg: Registry[object] = Registry("widget")

    @reg.register("b-widget", "a-widget")
    class Widget:
        pass

    assert reg.names() == ["a-widget", "b-widget"]
    assert reg.get("a-widget") is Widget and reg.find("b-widget") is Widget and reg.find("c") is None
    with pytest.raises(ValueError, match=r"unknown widget 'c'; available: \['a-widget', 'b-widget'\]"):
        reg.get("c")


def test_package_registries_are_filled_on_import():
    assert "efficientnet-lite0" in list_backbones() and "clip" in list_backbones()
    assert {"deeplab-ade20k", "oneformer"} <= set(list_segmenters())
    assert {"embeddings", "linear"} <= set(list_geo_heads())


def test_config_check_names_the_field_and_the_choices():
    reg: Registry[object] = Registry("widget")
    reg.register("a-widget")(type("A", (), {}))
    reg.check("a-widget", "part.widget")
    with pytest.raises(ValueError, match=r"unknown widget 'z': part.widget must be one of \['a-widget'\], not 'z'"):
        reg.check("z", "part.widget")
