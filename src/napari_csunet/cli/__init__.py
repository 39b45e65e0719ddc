"""The ``csunet`` command: its entry point and the subcommands this package owns."""
