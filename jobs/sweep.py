"""Ray job entry point for sweeps: `ray job submit --working-dir . -- python jobs/sweep.py
--config jobs/configs/study_<name>.yaml [key=value ...]` (the same entry as `biogner sweep`)."""

import sys

from biogner.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]], whole_process=True))
