"""Command-line checks of the project itself, run from a checkout (not installed): feature digests across machines."""
