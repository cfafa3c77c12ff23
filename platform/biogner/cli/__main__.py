"""`python -m biogner.cli ...`: the same as the `biogner` command."""

import sys

from biogner.cli import main

sys.exit(main())
