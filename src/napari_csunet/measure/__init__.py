"""What a segmentation says in physical units and how good it is: measurements, metrics, plots, report."""
