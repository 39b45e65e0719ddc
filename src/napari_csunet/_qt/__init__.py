"""Everything that imports Qt, magicgui or napari's GUI: the plugin's dock widget and panels.

One module per panel (model, segment, correct, fine-tune, inspect) plus the shared model session
and a few small widgets. The engines they drive (inference, analysis, annotations, training jobs)
live outside this package and never import Qt.
"""
