"""Decode single-object messages with fastavro, an Avro implementation independent of ours.

Usage: decode_with_fastavro.py <schemas/avro dir> <message file>... ; each file is named
<schema name>.<n>.bin. Prints one JSON line per message; fails on any mismatch.
"""
import io
import json
import os
import sys

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

avro_dir = sys.argv[1]
for path in sys.argv[2:]:
    name = os.path.basename(path).split(".")[0]
    with open(os.path.join(avro_dir, name + ".avsc")) as f:
        schema = json.load(f)
    expected = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    with open(path, "rb") as f:
        data = f.read()
    assert data[:2] == b"\xc3\x01", f"{path}: no single-object header"
    assert data[2:10].hex() == expected, f"{path}: fingerprint {data[2:10].hex()} != spec {expected}"
    record = schemaless_reader(io.BytesIO(data[10:]), parse_schema(schema))
    print(json.dumps({"file": os.path.basename(path), "record": record}, default=str))
