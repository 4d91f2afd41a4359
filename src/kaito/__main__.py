"""``python -m kaito``: the operator."""

import sys

from kaito.operator import main

if __name__ == "__main__":
    sys.exit(main())
