"""csunet_train: the GUI-free training backend of napari-csunet (few-shot fine-tuning, DDP)."""
