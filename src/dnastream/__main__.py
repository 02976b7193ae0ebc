"""`python -m dnastream` runs the command-line interface."""

from dnastream.cli.main import run

if __name__ == "__main__":
    run()
