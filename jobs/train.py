"""Ray job entry point for training: `ray job submit --working-dir . -- python jobs/train.py
--config jobs/configs/<name>.yaml [key=value ...]` (the same entry as `biogner train`)."""

import sys

import shipped  # noqa: F401 - first: the submitted platform/ package, not an installed one

from biogner.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], whole_process=True))
