"""Screenshot of one training on several images: the "Images to train on" list of the U-Net panel.

Run under a virtual screen from the repository root::

    xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/screenshot_projects.py   # writes docs/screenshot_projects.png

What it does, as a user would: opens three ISBI 2012 slices (the third cut to another size),
paints simulated strokes (`evaluation.strokes`) on the first two, trains one model on both
(`--steps`), unticks nothing, saves the project into a temporary folder, opens it again in a
new viewer and predicts every image of the project. It prints one JSON line: painted pixels
per image, steps, and whether the reopened project predicts the same masks bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the evaluation package sits at the repository root

from evaluation.strokes import simulate_strokes  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    parser.add_argument("--slices", nargs=3, default=["slice_00.png", "slice_05.png", "slice_10.png"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from src_models.io import read_image

    app = QApplication.instance() or QApplication([])

    def settle(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    viewer = napari.Viewer(title="napari-unet", show=True)
    viewer.window._qt_window.resize(1500, 1040)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    widget.threaded = False
    painted = {}
    for k, name in enumerate(args.slices):
        image = read_image(args.data / "images" / name)
        truth = read_image(args.data / "labels" / name)
        if k == 2:
            image, truth = image[:384, :448], truth[:384, :448]  # an image of another size
        layer_name = Path(name).stem
        viewer.add_image(image, name=layer_name)
        if k == 2:
            continue  # open, not painted: not in the list
        widget._image_combo.setCurrentText(layer_name)
        annotation = widget.new_annotation_layer()
        annotation.metadata["napari_unet_classes"] = {1: "membrane", 2: "cell interior"}
        classes = np.where(truth == 0, 1, 2).astype(np.uint8)
        strokes = simulate_strokes(classes, (1, 2), fraction=0.02, rng=k)
        where = np.nonzero(strokes)
        annotation.data_setitem(where, strokes[where])
        painted[layer_name] = int((strokes > 0).sum())
    widget._image_combo.setCurrentText(Path(args.slices[0]).stem)
    widget._train._steps_spin.setValue(args.steps)
    widget._train._train_btn.click()
    widget._predict._scope_combo.setCurrentText("Every image in the project")
    widget._predict._predict_btn.click()
    before = {name: np.array(viewer.layers[f"{name} prediction"].data) for name in painted}
    viewer.layers[Path(args.slices[2]).stem].visible = False
    for name in list(painted)[1:]:
        for suffix in ("", " annotation", " prediction"):
            viewer.layers[name + suffix].visible = False
    viewer.reset_view()
    settle(1.0)
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    settle(0.3)
    args.out.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out / "screenshot_projects.png"), canvas_only=False, flash=False)

    with tempfile.TemporaryDirectory() as folder:
        widget.save_project(folder)
        viewer.close()
        viewer2 = napari.Viewer(show=False)
        _, widget2 = viewer2.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
        widget2.threaded = False
        widget2.open_project(folder)
        widget2._predict._scope_combo.setCurrentText("Every image in the project")
        widget2._predict._predict_btn.click()
        same = all(np.array_equal(viewer2.layers[f"{name} prediction"].data, before[name]) for name in painted)
        viewer2.close()
    print(json.dumps({"painted_pixels": painted, "steps": widget.last_result.steps,
                      "reopened_project_predicts_the_same_masks": same,
                      "screenshot": str((args.out / "screenshot_projects.png").relative_to(REPO))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
