"""Re-vendor the dashboard's third-party browser assets from the npm registry (run by hand, never at build time).

Each package is fetched as its published tarball, checked against the sha256 recorded here, and only the listed
files are copied into ``simpletuner_server/ui/static/vendor/<name>/``. Bump a version by changing the row,
running this once with ``--update-hash``, and committing the files together with ``ui/static/vendor/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "packages/server-aiohttp/src/simpletuner_server/ui/static/vendor"
#: npm name -> (version, sha256 of the tarball, {path in the tarball: file name in vendor/<name>/}).
PACKAGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "uplot": ("1.6.32", "4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d", {
        "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
        "package/dist/uPlot.min.css": "uPlot.min.css",
        "package/LICENSE": "LICENSE",
    }),
}


def fetch(name: str, version: str) -> bytes:
    with urllib.request.urlopen(f"https://registry.npmjs.org/{name}/{version}", timeout=60) as resp:
        tarball = json.load(resp)["dist"]["tarball"]
    with urllib.request.urlopen(tarball, timeout=120) as resp:
        return resp.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update-hash", action="store_true", help="print the new hash instead of refusing")
    args = parser.parse_args()
    for name, (version, expected, files) in PACKAGES.items():
        data = fetch(name, version)
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected and not args.update_hash:
            print(f"{name}@{version}: sha256 {digest} != recorded {expected}", file=sys.stderr)
            return 1
        target = VENDOR / name
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member, out in files.items():
                extracted = tar.extractfile(member)
                assert extracted is not None, member
                (target / out).write_bytes(extracted.read())
        print(f"{name}@{version} sha256 {digest} -> {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
