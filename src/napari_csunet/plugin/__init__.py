"""What napari.yaml contributes besides the dock widget: reader, writer, sample data (no Qt, no torch)."""
