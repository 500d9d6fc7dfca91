"""``python -m m6_fashion ...``: the same as the ``m6-fashion`` command."""

from m6_fashion.cli import main

if __name__ == "__main__":
    main()
