"""The correction loop: where to correct next, live update, training-job specs and their child processes."""
