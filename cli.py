"""`python cli.py ...` runs the same app as the `kenning` entry point."""

from kenning.cli import main

if __name__ == "__main__":
    main()
