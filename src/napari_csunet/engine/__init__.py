"""Tiled prediction on a device: the predictor, its tiles, memory plan, accumulator, lazy arrays, mosaics."""
