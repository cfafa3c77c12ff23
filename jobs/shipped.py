"""Makes a Ray job run the biogner it was submitted with, not whatever biogner is installed
where it lands: `ray job submit --working-dir .` ships the working tree, whose package lives
in `platform/`, which is not on the job's import path. Imported first by every `jobs/*.py`;
`biogner.runtime.init_ray` then ships the same package to the job's Ray workers
(`py_modules`)."""

import sys
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[1] / "platform"
if (PLATFORM / "biogner" / "__init__.py").is_file() and str(PLATFORM) not in sys.path:
    sys.path.insert(0, str(PLATFORM))
