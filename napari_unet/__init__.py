"""napari face of napari-unet: a dock widget, a labels writer and a sample image.

Kept free of heavy imports: napari loads the contributions named in ``napari.yaml``
lazily, so importing this package must not import torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
