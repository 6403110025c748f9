"""Thin entry point: `python cli.py ...` is the same as `cvapps ...`."""

from cvapps.cli import main

if __name__ == "__main__":
    main()
