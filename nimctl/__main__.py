"""`python -m nimctl` is the same as the `nimctl` console script."""

from nimctl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
