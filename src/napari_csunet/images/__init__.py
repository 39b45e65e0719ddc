"""Micrographs and labels on disk: reading, pixel size, data bar, labelled datasets, the annotation set."""
