"""Command-line interface (typer): a thin layer over dnastream.pipelines."""
