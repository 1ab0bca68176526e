"""The npe2 manifest: canonical at the root, identical copy inside the package, importable,
and found by napari's plugin manager through the installed entry point."""

from __future__ import annotations

import configparser
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from npe2 import PluginManager, PluginManifest

from conftest import REPO

ROOT_MANIFEST = REPO / "napari.yaml"
PACKAGED_MANIFEST = REPO / "napari_unet" / "napari.yaml"
# The distribution (and so manifest) name; the import package stays napari_unet (see README).
PLUGIN = "napari-unet-strokes"


def test_packaged_manifest_is_byte_identical_to_root():
    assert PACKAGED_MANIFEST.read_bytes() == ROOT_MANIFEST.read_bytes(), (
        "napari_unet/napari.yaml differs from the canonical napari.yaml; "
        "run: cp napari.yaml napari_unet/napari.yaml"
    )


def test_manifest_validates_and_imports():
    manifest = PluginManifest.from_file(ROOT_MANIFEST)
    assert manifest.name == PLUGIN
    manifest.validate_imports()  # raises if a python_name does not resolve
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["U-Net segmentation", "Segment a folder (U-Net)"]
    assert contrib.writers[0].layer_types == ["labels"]
    assert set(contrib.writers[0].filename_extensions) == {".tif", ".tiff"}
    assert len(contrib.sample_data) == 1
    for command in contrib.commands:
        assert command.title and command.title[0].isupper(), command


def test_manifest_name_is_the_distribution_name():
    # npe2 requires the manifest's name to equal the distribution name in setup.cfg
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert config["metadata"]["name"] == PLUGIN


def test_entry_point_points_at_packaged_manifest():
    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == PLUGIN]
    if not eps:
        pytest.fail(f"{PLUGIN} is not installed; run: pip install -e '.[testing]'")
    assert eps[0].value == "napari_unet:napari.yaml"


def test_plugin_manager_discovers_plugin():
    pm = PluginManager()
    pm.discover(include_npe1=False)
    assert PLUGIN in {m.name for m in pm.iter_manifests()}
    assert pm.get_manifest(PLUGIN).display_name == "U-Net"
    widgets = [w.display_name for w in pm.iter_widgets() if w.command.startswith(f"{PLUGIN}.")]
    assert widgets == ["U-Net segmentation", "Segment a folder (U-Net)"]


def test_npe2_cli_lists_plugin():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "list", "--fields", "name"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert PLUGIN in out


def test_sample_data_is_deterministic_uint8():
    from napari_unet._sample_data import make_sample_data

    (first, meta, kind), = make_sample_data()
    (second, _, _), = make_sample_data()
    assert kind == "image" and meta["name"]
    assert first.dtype.name == "uint8" and first.shape == (256, 256)
    assert (first == second).all()
    assert first.std() > 10  # not a blank image
