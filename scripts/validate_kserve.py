"""Validate deploy/kserve/*.yaml against KServe's own CRD schemas, offline.

    python scripts/validate_kserve.py --crds <kserve checkout>/config/crd/full
    python scripts/validate_kserve.py --crds <...>/config/crd/full --write-pruned FILE
    python scripts/validate_kserve.py --schemas tests/deploy/kserve_schemas.json

Each manifest is checked against the `openAPIV3Schema` of its kind and version in the CRD files
found under --crds (serving.kserve.io_*.yaml), with unknown fields refused (a typo in a field
name is an error here, where the API server would drop it silently). Prints one line per
manifest and exits 1 if one fails.

KServe's full CRDs are large (the InferenceService's is 39,000 lines) and not ours to commit, so
`--write-pruned` keeps of each schema what our manifests touch: along every path they use, the
names of all the fields an object takes (so an unknown one is still refused) and the whole
schema of each field they set; fields they do not set keep their name only. `make test`
validates against that file (`--schemas`), made from the kserve/kserve commit it names.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kserve"

Schema = dict[str, Any]


def crd_schemas(crds: Path, strict_too: bool = True) -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) → the version's openAPIV3Schema, from every CRD file under `crds`
    (made `strict` unless told not to)."""
    schemas: dict[tuple[str, str], Schema] = {}
    for path in sorted(crds.glob("serving.kserve.io_*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                key = (f"{group}/{version['name']}", kind)
                schemas[key] = strict(schema) if strict_too else schema
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


def prune(schema: Any, value: Any) -> Any:
    """`schema` cut down to what `value` (a manifest, or several merged) uses: every field name
    along its paths (so an unknown one is still refused) and the whole schema of each field it
    sets. (KServe's full CRDs carry no descriptions, so none needs stripping.)"""
    if not isinstance(schema, dict):
        return schema
    if isinstance(value, dict) and "properties" in schema:
        out = {key: item for key, item in schema.items() if key != "properties"}
        out["properties"] = {
            name: prune(sub, value[name]) if name in value else {}
            for name, sub in schema["properties"].items()
        }
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        merged: Any = {}
        for element in value:
            merged = merge(merged, element)
        return {**schema, "items": prune(schema["items"], merged if value else None)}
    return schema


def merge(a: Any, b: Any) -> Any:
    """Two example values as one that has the fields of both (for pruning)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {key: merge(a.get(key), b.get(key)) for key in {*a, *b}}
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return b if a is None else a


def pruned_schemas(crds: Path) -> dict[str, Any]:
    """The pruned schema of each (apiVersion, kind) our manifests use, as JSON keys."""
    schemas = crd_schemas(crds, strict_too=False)
    examples: dict[tuple[str, str], Any] = {}
    for _, manifest in manifests():
        key = (manifest["apiVersion"], manifest["kind"])
        examples[key] = merge(examples.get(key), manifest)
    return {
        f"{api} {kind}": prune(schemas[(api, kind)], example)
        for (api, kind), example in examples.items()
    }


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for manifest in yaml.safe_load_all(path.read_text()):
            if manifest:
                yield path, manifest


def load_pruned(path: Path) -> dict[tuple[str, str], Schema]:
    """The schemas `--write-pruned` wrote, made `strict`."""
    document = json.loads(path.read_text())
    return {tuple(key.split(" ", 1)): strict(schema) for key, schema in document["schemas"].items()}


def validate(crds: Path | None = None, schemas_file: Path | None = None) -> list[str]:
    """One line per manifest; a failing one starts with FAIL."""
    schemas = load_pruned(schemas_file) if schemas_file else crd_schemas(crds or Path())
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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--crds", type=Path, help="directory of KServe CRD YAML")
    source.add_argument("--schemas", type=Path, help="a file --write-pruned wrote")
    parser.add_argument("--write-pruned", type=Path, help="with --crds: write the pruned schemas")
    parser.add_argument(
        "--source", default="", help="with --write-pruned: where the CRDs came from"
    )
    args = parser.parse_args()
    if args.write_pruned:
        if not args.crds:
            parser.error("--write-pruned needs --crds")
        document = {"source": args.source, "schemas": pruned_schemas(args.crds)}
        args.write_pruned.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    lines = validate(args.crds, args.schemas)
    print("\n".join(lines))
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
