"""Ray job entry point for batch extraction: `ray job submit --working-dir . -- python
jobs/extract.py --model models:/biogner@champion --input DOCS --output OUT [key=value ...]`
(the same entry as `biogner extract`)."""

import sys

import shipped  # noqa: F401 - first: the submitted platform/ package, not an installed one

from biogner.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]], whole_process=True))
