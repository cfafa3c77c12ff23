"""Ray job entry point for sweeps: `ray job submit --working-dir . -- python jobs/sweep.py
--config jobs/configs/study_<name>.yaml [key=value ...]` (the same entry as `biogner sweep`)."""

import sys

import shipped  # noqa: F401 - first: the submitted platform/ package, not an installed one

from biogner.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]], whole_process=True))
