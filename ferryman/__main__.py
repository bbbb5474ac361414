"""``python -m ferryman``: the same as the ``ferryman`` command."""

from .cli import main

if __name__ == "__main__":
    main()
