"""Pulls the Wasm module out of an image in a registry the way Istio's image fetcher does
(istio pkg/wasm/imagefetcher.go, through go-containerregistry): the manifest by tag, its digest
from the bytes served, the last layer, which must be application/vnd.oci.image.layer.v1.tar+gzip,
and in it the file whose base name is plugin.wasm. Every blob is checked against its digest.

Usage: oci_pull.py http://HOST:PORT REPOSITORY TAG OUT.wasm; prints the manifest digest."""
import gzip
import hashlib
import io
import json
import sys
import tarfile
import urllib.request

base, repo, tag, out = sys.argv[1:5]
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def get(path, accept=None):
    req = urllib.request.Request(f"{base}/v2/{repo}/{path}", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read(), r.headers


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


raw, headers = get(f"manifests/{tag}", ACCEPT)
digest = sha(raw)
if headers.get("Docker-Content-Digest") not in (None, digest):
    sys.exit(f"oci_pull: the registry says {headers['Docker-Content-Digest']}, the bytes are {digest}")
manifest = json.loads(raw)
if manifest.get("mediaType") not in (None, "application/vnd.oci.image.manifest.v1+json"):
    sys.exit(f"oci_pull: manifest media type {manifest.get('mediaType')}")
layer = manifest["layers"][-1]
if layer["mediaType"] != "application/vnd.oci.image.layer.v1.tar+gzip":
    sys.exit(f"oci_pull: invalid media type {layer['mediaType']} (expect the compat variant's tar+gzip)")
blob, _ = get(f"blobs/{layer['digest']}")
if sha(blob) != layer["digest"] or len(blob) != layer["size"]:
    sys.exit("oci_pull: the layer does not match its descriptor")
with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
    member = next((m for m in tar.getmembers() if m.name.rsplit("/", 1)[-1] == "plugin.wasm"), None)
    if member is None:
        sys.exit("oci_pull: plugin.wasm not found in the archive")
    open(out, "wb").write(tar.extractfile(member).read())
print(digest)
