"""`python -m edge_ad` runs the same command line as the `edge_ad` script."""

import sys

from edge_ad.cli import main

sys.exit(main())
