"""Helpers of deploy/check.sh that need a YAML, JSON or HCL parser.

Each subcommand prints what it checked and exits 1 on the first problem.
"""

import argparse
import json
import sys

import hcl2
import yaml


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def split_manifests(source: str, target: str, skip_kinds: set[str]) -> None:
    """Copies the documents of a rendered kustomization to `target`, except
    those of `skip_kinds`: custom resources that kubernetes-validate has no
    schema for, and would only warn about."""
    with open(source, encoding="utf-8") as file:
        documents = [doc for doc in yaml.safe_load_all(file) if doc is not None]
    if not documents:
        fail(f"{source}: the kustomization rendered no objects")

    kept = []
    for doc in documents:
        kind = doc.get("kind")
        name = doc.get("metadata", {}).get("name")
        if not kind or not doc.get("apiVersion") or not name:
            fail(f"{source}: an object lacks kind, apiVersion or metadata.name: {doc}")
        if kind in skip_kinds:
            print(f"  skipped {kind}/{name}: a custom resource without a Kubernetes schema")
        else:
            kept.append(doc)

    with open(target, "w", encoding="utf-8") as file:
        yaml.safe_dump_all(kept, file, sort_keys=False)
    print(f"  {len(kept)} objects to validate from {source}")


def parse_hcl(paths: list[str]) -> None:
    for path in paths:
        with open(path, encoding="utf-8") as file:
            try:
                hcl2.load(file)
            except Exception as err:  # python-hcl2 raises lark's various errors
                fail(f"{path}: invalid HCL: {err}")
        print(f"  parsed {path}")


def parse_json(paths: list[str]) -> None:
    for path in paths:
        with open(path, encoding="utf-8") as file:
            try:
                json.load(file)
            except json.JSONDecodeError as err:
                fail(f"{path}: invalid JSON: {err}")
        print(f"  parsed {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    manifests = commands.add_parser("manifests", help="drop custom resources from rendered YAML")
    manifests.add_argument("--skip-kinds", default="", help="comma-separated kinds to drop")
    manifests.add_argument("source")
    manifests.add_argument("target")

    hcl = commands.add_parser("hcl", help="parse Terraform files")
    hcl.add_argument("paths", nargs="+")

    json_files = commands.add_parser("json", help="parse JSON files")
    json_files.add_argument("paths", nargs="+")

    args = parser.parse_args()
    if args.command == "manifests":
        kinds = {kind for kind in args.skip_kinds.split(",") if kind}
        split_manifests(args.source, args.target, kinds)
    elif args.command == "hcl":
        parse_hcl(args.paths)
    else:
        parse_json(args.paths)


if __name__ == "__main__":
    main()
