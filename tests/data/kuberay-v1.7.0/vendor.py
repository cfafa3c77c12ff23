"""Regenerate the vendored KubeRay CRD schemas from a KubeRay checkout (run from anywhere).

    python tests/data/kuberay-v1.7.0/vendor.py /path/to/kuberay   # checked out at v1.7.0

Source: ray-project/kuberay tag v1.7.0 (commit 59d663aeec13760646da3db9c1cf8cfe883e30b7),
ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,rayservices}.yaml. Apache-2.0.
Writes <kind>.schema.json.gz beside this file: the `openAPIV3Schema` of each CRD's served
`v1` version, as the operator's API server validates with it (nothing edited).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KINDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}


def main(kuberay: Path) -> None:
    for kind, plural in KINDS.items():
        crd = yaml.safe_load(
            (kuberay / "ray-operator/config/crd/bases" / f"ray.io_{plural}.yaml").read_text()
        )
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = version["schema"]["openAPIV3Schema"]
        data = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
        with gzip.GzipFile(HERE / f"{kind}.schema.json.gz", "wb", mtime=0) as out:
            out.write(data)
        print(f"{kind}: {len(data)} bytes of schema")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
