"""``python -m serving``: see :mod:`serving.launcher`."""

from serving.launcher import main

if __name__ == "__main__":
    main()
