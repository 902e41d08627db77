"""``python -m pyfacepnp ...``: the command line (see :mod:`pyfacepnp.cli`)."""

import sys

from pyfacepnp.cli import main

if __name__ == "__main__":
    sys.exit(main())
