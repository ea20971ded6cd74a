"""An EHR vendor's backend client of the HIE's FHIR API, independent of our code: SMART Backend
Services with PyJWT (the client assertion), fhirpy (the FHIR client, following the server's
`next` links) and fhir.resources (R4B models) validating every resource and Bundle returned.

Usage:
  ehr_client.py keygen --alg RS384|ES384 --dir DIR
      writes DIR/private.pem and prints {"kid", "jwks"} (the public key set to register)
  ehr_client.py assertion --key PEM --alg A --kid K --client-id ID --aud URL
                          [--exp-in S] [--jti J] [--sub S]
      prints one client assertion (for tests of what the token endpoint refuses)
  ehr_client.py run --base URL --client-id ID --key PEM --alg A --kid K
                    --identifier SYSTEM|VALUE --count N [--code SYSTEM|CODE]
      knows only its client id, its private key and the server's base URL: discovers the token
      endpoint, gets a token, finds the patient by identifier, pages through $everything and an
      Observation search, validates everything; prints a JSON summary (with the token and the
      first page's next link, to try again later)
  ehr_client.py get --base URL --token T --url URL
      one read with fhirpy; prints {"status": "ok"|"forbidden"|..., "body": ...}

Runs offline against the given server.
"""
import argparse
import importlib
import json
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, OperationOutcome


def model(resource_type):
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


def validate(data):
    """fhir.resources validates a resource (a Bundle with its entries); raises if invalid."""
    data = json.loads(json.dumps(data))
    model(data["resourceType"]).model_validate(data)


def keygen(args):
    if args.alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    kid = str(uuid.uuid4())
    public.update({"kid": kid, "alg": args.alg, "use": "sig"})
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(f"{args.dir}/private.pem", "wb") as f:
        f.write(pem)
    print(json.dumps({"kid": kid, "jwks": {"keys": [public]}}))


def assertion(key_pem, alg, kid, client_id, aud, exp_in=240, jti=None, sub=None):
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": sub or client_id,
        "aud": aud,
        "exp": now + exp_in,
        "iat": now,
        "jti": jti or str(uuid.uuid4()),
    }
    return jwt.encode(claims, key_pem, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def get_token(base, client_id, key_pem, alg, kid, scope):
    # SMART discovery: the configuration lives beside the FHIR base.
    config = requests.get(f"{base}/fhir/.well-known/smart-configuration", timeout=30).json()
    token_url = config["token_endpoint"]
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"], config
    assert alg in config["token_endpoint_auth_signing_alg_values_supported"], config
    r = requests.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(key_pem, alg, kid, client_id, token_url),
        },
        timeout=30,
    )
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] <= 300, body
    return body


def pages(client, first_bundle):
    """Every page of a searchset, following `next` links, each validated."""
    bundle = first_bundle
    while True:
        validate(bundle)
        assert bundle["type"] == "searchset", bundle["type"]
        yield bundle
        nxt = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not nxt:
            return
        bundle = client.execute(nxt[0], method="get")


def walk(client, first_bundle):
    """(resources, page count, total, first page's next link) of a paged search."""
    resources, count, total, first_next = [], 0, None, None
    for bundle in pages(client, first_bundle):
        if count == 0:
            total = bundle["total"]
            links = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
            first_next = links[0] if links else None
        assert bundle["total"] == total, "the total changed while paging"
        count += 1
        for entry in bundle.get("entry", []):
            validate(entry["resource"])
            resources.append(entry["resource"])
    return resources, count, total, first_next


def run(args):
    key_pem = open(args.key, "rb").read()
    token = get_token(args.base, args.client_id, key_pem, args.alg, args.kid, "system/*.rs")
    client = SyncFHIRClient(f"{args.base}/fhir", authorization=f"Bearer {token['access_token']}")

    metadata = client.execute("metadata", method="get")
    validate(metadata)

    patients = client.resources("Patient").search(identifier=args.identifier).fetch_all()
    assert len(patients) == 1, len(patients)
    patient = patients[0]
    validate(patient.serialize())

    everything = client.execute(
        f"Patient/{patient.id}/$everything", method="get", params={"_count": args.count}
    )
    resources, page_count, total, first_next = walk(client, everything)
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(keys) == total, (len(keys), total)

    search = client.resources("Observation").search(patient=patient.id).limit(args.count)
    obs, obs_pages, obs_total, _ = walk(client, search.fetch_raw())
    # fhirpy's own iteration follows the same next links.
    assert len(search.fetch_all()) == obs_total

    coded = []
    if args.code:
        coded_search = client.resources("Observation").search(patient=patient.id, code=args.code)
        coded = [o.serialize() for o in coded_search.limit(args.count).fetch_all()]
        for o in coded:
            validate(o)

    print(json.dumps({
        "patient": patient.id,
        "token": token["access_token"],
        "scope": token["scope"],
        "everything": {"total": total, "pages": page_count, "keys": keys, "first_next": first_next},
        "observations": {"total": obs_total, "pages": obs_pages,
                         "ids": [o["id"] for o in obs]},
        "coded": [o["id"] for o in coded],
    }))


def get(args):
    client = SyncFHIRClient(f"{args.base}/fhir", authorization=f"Bearer {args.token}")
    try:
        body = client.execute(args.url, method="get")
        validate(body)
        print(json.dumps({"status": "ok", "body": body}))
    except ForbiddenError as e:
        body = json.loads(str(e))
        validate(body)
        print(json.dumps({"status": "forbidden", "body": body}))
    except OperationOutcome as e:
        print(json.dumps({"status": "error", "body": str(e)}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("--alg", required=True, choices=["RS384", "ES384"])
    k.add_argument("--dir", required=True)
    a = sub.add_parser("assertion")
    for name in ["--key", "--alg", "--kid", "--client-id", "--aud"]:
        a.add_argument(name, required=True)
    a.add_argument("--exp-in", type=int, default=240)
    a.add_argument("--jti")
    a.add_argument("--sub")
    r = sub.add_parser("run")
    for name in ["--base", "--client-id", "--key", "--alg", "--kid", "--identifier"]:
        r.add_argument(name, required=True)
    r.add_argument("--count", type=int, default=50)
    r.add_argument("--code")
    g = sub.add_parser("get")
    for name in ["--base", "--token", "--url"]:
        g.add_argument(name, required=True)
    args = p.parse_args()
    if args.command == "keygen":
        keygen(args)
    elif args.command == "assertion":
        key_pem = open(args.key, "rb").read()
        print(assertion(key_pem, args.alg, args.kid, args.client_id, args.aud,
                        args.exp_in, args.jti, args.sub))
    elif args.command == "run":
        run(args)
    else:
        get(args)


if __name__ == "__main__":
    sys.exit(main())
