"""Validate deploy/kserve/*.yaml against KServe's own CRD schemas, offline.

    python scripts/validate_kserve.py --crds <kserve checkout>/config/crd/full

Each manifest is checked against the `openAPIV3Schema` of its kind and version in the CRD files
found under --crds (serving.kserve.io_*.yaml), with unknown fields refused (a typo in a field
name is an error here, where the API server would drop it silently). Prints one line per
manifest and exits 1 on the first that fails. `tests/deploy/test_kserve.py` runs this when the
environment variable KSERVE_CRDS names such a directory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kserve"

Schema = dict[str, Any]


def crd_schemas(crds: Path) -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) → the version's openAPIV3Schema, from every CRD file under `crds`."""
    schemas: dict[tuple[str, str], Schema] = {}
    for path in sorted(crds.glob("serving.kserve.io_*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever it lists properties and says
    nothing else about extra ones (Kubernetes prunes unknown fields; we want to hear of them)."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for manifest in yaml.safe_load_all(path.read_text()):
            if manifest:
                yield path, manifest


def validate(crds: Path) -> list[str]:
    """One line per manifest; a failing one starts with FAIL."""
    schemas = crd_schemas(crds)
    if not schemas:
        return [f"FAIL no serving.kserve.io CRDs under {crds}"]
    lines = []
    for path, manifest in manifests():
        key = (manifest["apiVersion"], manifest["kind"])
        name = f"{path.name}: {key[1]}/{manifest['metadata']['name']} ({key[0]})"
        schema = schemas.get(key)
        if schema is None:
            lines.append(f"FAIL {name}: no CRD for it")
            continue
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda e: list(e.path)
        )
        if errors:
            where = ".".join(str(part) for part in errors[0].path) or "(top)"
            lines.append(f"FAIL {name}: {where}: {errors[0].message}")
        else:
            lines.append(f"ok   {name}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", type=Path, required=True, help="directory of KServe CRD YAML")
    args = parser.parse_args()
    lines = validate(args.crds)
    print("\n".join(lines))
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
