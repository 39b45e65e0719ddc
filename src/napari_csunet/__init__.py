"""napari-csunet: segment micrographs with CS-UNet, correct masks, fine-tune on a few images.

Importing this package is cheap: it imports neither torch nor Qt (napari reads the manifest at
start-up). The heavy parts live in the concept folders (see docs/architecture.md): ``engine``, ``models``,
``weights``, ``loop``, ``_qt``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
