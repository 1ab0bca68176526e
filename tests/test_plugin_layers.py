"""Layer helpers of the plugin: field-of-view arithmetic, partial updates of the prediction
layer, and accepting predictions without touching painted pixels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet import _layers


@pytest.mark.parametrize(
    "lo, hi, size, expected",
    [(0, 512, 512, (0, 512)),            # whole plane visible
     (200, 240, 2000, (92, 348)),        # zoomed in: grown to 256 around the centre...
     (100, 140, 2000, (0, 256)),         # ...sliding to stay inside the image
     (1990, 2000, 2000, (1744, 2000)),
     (0, 5000, 4000, (1988, 3012)),      # zoomed out on a huge plane: 1024 around the centre
     (0, 100, 100, (0, 100))],           # a plane smaller than min_side: all of it
)
def test_span_grows_cuts_and_clips(lo, hi, size, expected):
    got = _layers._span(lo, hi, size, min_side=256, max_side=1024)
    assert (got.start, got.stop) == expected


def test_show_labels_region_clears_rest_of_plane_only(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((2, 40, 50), np.uint8), name="im")
    annotation = _layers.new_annotation_layer(viewer, image)
    layer = _layers.show_labels(viewer, "im prediction", np.full((2, 40, 50), 1, np.uint8),
                                like=image, colors_from=annotation)
    patch = np.full((10, 20), 2, np.uint8)
    _layers.show_labels(viewer, "im prediction", patch, index=(1,), region=(slice(5, 15), slice(0, 20)),
                        full_shape=(2, 40, 50), colors_from=annotation)
    data = viewer.layers["im prediction"].data
    assert (data[0] == 1).all()                      # the other slice is untouched
    assert (data[1, 5:15, :20] == 2).all()           # the previewed field of view
    assert data[1].sum() == patch.sum()              # the rest of that plane is cleared
    assert viewer.layers.index(layer.name) < viewer.layers.index(annotation.name)
    assert viewer.layers.selection.active.name == annotation.name


def test_objects_predicted_slice_by_slice_keep_distinct_ids(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((3, 20, 20), np.uint8), name="im")
    objects = np.zeros((20, 20), np.uint16)
    objects[2:6, 2:6], objects[10:15, 10:15] = 1, 2  # ids 1..2 on every slice, as predicted per slice
    for z in (0, 2, 0):  # slice 0 predicted again: its own old ids do not count
        _layers.show_labels(viewer, "im objects", objects, like=image, index=(z,), full_shape=(3, 20, 20),
                            instances=True)
    data = viewer.layers["im objects"].data
    assert set(np.unique(data[2])) == {0, 3, 4}  # above slice 0's first ids
    assert set(np.unique(data[0])) == {0, 5, 6}  # above slice 2's, not above its own old ones
    assert not (data[1] > 0).any()
    big = np.where(objects > 0, objects.astype(np.uint32) + 65534, 0)  # ids beyond uint16 stay distinct
    _layers.show_labels(viewer, "im objects", big, index=(1,), full_shape=(3, 20, 20), instances=True)
    data = viewer.layers["im objects"].data
    assert data[1].max() == 65536 + 6 and data.dtype == np.uint32


def test_accept_into_keeps_painted_and_is_one_undo_step(make_napari_viewer):
    viewer = make_napari_viewer()
    painted = np.zeros((20, 20), np.uint8)
    painted[2:4, :] = 1
    painted[10, 5:15] = 3
    layer = viewer.add_labels(painted.copy())
    prediction = np.full((20, 20), 2, np.uint8)
    prediction[15:, :] = 0  # nothing predicted here: stays unpainted
    seen = []
    layer.events.paint.connect(lambda event: seen.append(event))

    filled = _layers.accept_into(layer, prediction)

    assert filled == int(((painted == 0) & (prediction != 0)).sum())
    assert np.array_equal(layer.data[painted > 0], painted[painted > 0])
    assert (layer.data[15:][painted[15:] == 0] == 0).all()
    assert len(seen) == 1
    layer.undo()
    assert np.array_equal(layer.data, painted)
    with pytest.raises(ValueError, match="shape"):
        _layers.accept_into(layer, prediction[:10])
