"""Screenshots of the plugin at work on a real ISBI 2012 EM slice, and the latency a user feels.

Run under a virtual screen from the repository root::

    xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/screenshots.py   # writes docs/screenshot_*.png

What it does, as a user would: opens ``slice_00.png``, docks "U-Net segmentation",
creates the annotation layer, paints strokes simulated from the ground truth the way a
person paints them (`evaluation.strokes`: membranes traced, short strokes inside cells;
membrane -> class 1, interior -> class 2), clicks Train (real thread worker), waits for
the budget, predicts the whole slice, and screenshots each stage. It prints one JSON
line: seconds from clicking Train to the first preview, steps trained, and how long the
Qt event loop stalled while training (what a user painting meanwhile would feel).
"""

from __future__ import annotations

import argparse
import json
import time
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the evaluation package sits at the repository root

from evaluation.strokes import simulate_strokes  # noqa: E402


def wait_while(app, condition, timeout: float, on_tick=None) -> None:
    """Spin the Qt event loop while ``condition()`` holds (at most ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while condition() and time.monotonic() < end:
        app.processEvents()
        if on_tick is not None:
            on_tick()
        time.sleep(0.005)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    parser.add_argument("--slice", default="slice_00.png")
    parser.add_argument("--budget", type=float, default=25.0, help="training time budget, seconds")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--no-screenshots", action="store_true", help="only measure the latency")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari._qt.dialogs.qt_notification import NapariQtNotification

    from src_models.io import read_image

    image = read_image(args.data / "images" / args.slice)
    truth = read_image(args.data / "labels" / args.slice)
    args.out.mkdir(parents=True, exist_ok=True)

    viewer = napari.Viewer(title="napari-unet", show=True)
    viewer.window._qt_window.resize(1500, 1040)
    app = QApplication.instance()
    viewer.add_image(image, name="isbi slice")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-strokes", "U-Net segmentation")
    annotation = widget.new_annotation_layer()
    widget._classes.rename(1, "membrane")
    widget._classes.rename(2, "cell interior")
    classes = np.where(truth == 0, 1, 2).astype(np.uint8)  # ISBI: 0 = membrane, 255 = interior
    strokes = simulate_strokes(classes, (1, 2), fraction=0.02, rng=0)  # traced membranes, short interior strokes
    where = np.nonzero(strokes)
    annotation.data_setitem(where, strokes[where])
    viewer.reset_view()
    wait_while(app, lambda: True, 1.0)

    def shot(name: str) -> None:
        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()  # e.g. napari's PyQt5 deprecation notice, drawn over the canvas
        app.processEvents()
        if not args.no_screenshots:
            viewer.screenshot(str(args.out / f"screenshot_{name}.png"), canvas_only=False, flash=False)

    shot("strokes")

    # Event-loop stalls while training: a 20 ms timer records the gaps between its ticks.
    ticks: list[float] = []
    timer = QTimer(interval=20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    widget._train._budget_spin.setValue(args.budget)
    timer.start()
    widget._train._train_btn.click()
    wait_while(app, lambda: widget._train.first_preview_seconds is None, 120)
    first_preview = widget._train.first_preview_seconds
    wait_while(app, lambda: widget._train.running and time.perf_counter() - ticks[0] < 0.8 * args.budget, 120)
    shot("training")
    wait_while(app, lambda: widget._train.running, args.budget + 120)
    timer.stop()
    gaps = np.diff(ticks) * 1000 if len(ticks) > 1 else np.zeros(1)
    wait_while(app, lambda: True, 0.5)
    shot("trained")

    widget._predict._scope_combo.setCurrentText("Whole image")
    widget._predict._predict_btn.click()
    predict_clicked = time.perf_counter()
    wait_while(app, lambda: widget._predict.worker is not None, 120)
    predict_seconds = time.perf_counter() - predict_clicked
    viewer.layers["isbi slice annotation"].visible = False
    wait_while(app, lambda: True, 0.5)
    shot("prediction")

    prediction = viewer.layers["isbi slice prediction"].data
    agreement = float(((prediction == 2) == (truth > 0)).mean())
    result = widget.last_result
    print(json.dumps({
        "image": f"{args.slice} {image.shape} {image.dtype}",
        "painted_pixels": int((strokes > 0).sum()),
        "first_preview_s": round(first_preview, 2),
        "steps": result.steps,
        "train_s": round(result.elapsed, 1),
        "predict_whole_slice_s": round(predict_seconds, 2),
        "pixel_agreement_with_ground_truth": round(agreement, 3),
        "event_loop_gap_ms": {"median": round(float(np.median(gaps)), 1),
                              "p95": round(float(np.percentile(gaps, 95)), 1),
                              "max": round(float(gaps.max()), 1)},
        "screenshots": [] if args.no_screenshots else sorted(str(p.relative_to(REPO))
                                                              for p in args.out.glob("screenshot_*.png")),
    }))
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
