"""The `serving` command line (typer)."""
