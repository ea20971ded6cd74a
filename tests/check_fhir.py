"""Validate our FHIR JSON with fhir.resources, a FHIR implementation independent of ours.

Usage: check_fhir.py <file.json>... ; each file holds one resource (any type, a Bundle with its
entries included). Uses the R4B models (R4's successor with the same shapes for the resources we
serve; the package ships no plain R4). Prints one line per file; exits non-zero on the first
resource that does not validate. Runs offline.
"""
import importlib
import json
import sys


def model(resource_type):
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


for path in sys.argv[1:]:
    with open(path) as f:
        data = json.load(f)
    resource = model(data["resourceType"]).model_validate(data)
    entries = len(data.get("entry", []))
    print(json.dumps({"file": path, "resourceType": resource.get_resource_type(), "entries": entries}))
