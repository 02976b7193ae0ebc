"""`python -m dnastream` runs the command-line interface."""

from dnastream.cli.main import app

if __name__ == "__main__":
    app()
