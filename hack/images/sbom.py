"""Write a CycloneDX 1.5 JSON SBOM of an image's root filesystem: every installed Debian package (from dpkg's
database) and every installed Python distribution (every ``*.dist-info`` directory's METADATA), with package URLs,
so a vulnerability scanner (``grype sbom:FILE``, ``trivy sbom FILE``) can match them against known advisories.

    python3 hack/images/sbom.py ROOTFS IMAGE_NAME OUTPUT.json

Standard library only; reads the files, runs nothing from the image.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from datetime import datetime, timezone
from email.parser import HeaderParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_METADATA_BYTES = 1 << 20  # a METADATA file's headers come first; the description after them is not needed


def _stanzas(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                continue  # continuation of a multi-line field (Description, Conffiles): not needed
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def debian_packages(root: Path) -> list[dict[str, Any]]:
    status = root / "var" / "lib" / "dpkg" / "status"
    release = root / "etc" / "os-release"
    os_release = release.read_text(errors="replace") if release.exists() else ""
    match = re.search(r'^VERSION_ID="?([^"\n]*)', os_release, re.M)
    distro = f"debian-{match.group(1)}" if match else "debian"
    components = []
    for pkg in _stanzas(status.read_text(errors="replace")):
        if pkg.get("Status", "").split()[-1:] != ["installed"]:
            continue
        name, version, arch = pkg["Package"], pkg.get("Version", ""), pkg.get("Architecture", "")
        purl = f"pkg:deb/debian/{quote(name)}@{quote(version, safe='')}?arch={arch}&distro={distro}"
        source = pkg.get("Source", "").split(" ")[0]
        if source and source != name:
            purl += f"&upstream={quote(source)}"
        components.append({"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl})
    return components


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_distributions(root: Path) -> list[dict[str, Any]]:
    components: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, _ in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.startswith(("proc", "sys", "dev")):
            dirnames[:] = []
            continue
        for d in [d for d in dirnames if d.endswith(".dist-info")]:
            meta = Path(dirpath) / d / "METADATA"
            if not meta.is_file():
                continue
            with open(meta, encoding="utf-8", errors="replace") as f:
                headers = HeaderParser().parsestr(f.read(MAX_METADATA_BYTES), headersonly=True)
            name, version = headers.get("Name"), headers.get("Version")
            if not name or not version:
                continue
            purl = f"pkg:pypi/{_normalize(name)}@{quote(version, safe='')}"
            location = "/" + os.path.relpath(Path(dirpath) / d, root)
            entry = components.setdefault(purl, {
                "type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl,
                "properties": [],
            })
            entry["properties"].append({"name": "kubetune:location", "value": location})
            if headers.get("License"):
                entry.setdefault("licenses", [{"expression": str(headers["License"])[:200]}])
    return sorted(components.values(), key=lambda c: str(c["purl"]))


def sbom(root: Path, image: str) -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "kubetune hack/images/sbom.py"}]},
            "component": {"type": "container", "bom-ref": image, "name": image},
        },
        "components": debian_packages(root) + python_distributions(root),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, image, output = Path(argv[0]), argv[1], Path(argv[2])
    doc = sbom(root, image)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
