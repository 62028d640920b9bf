"""Packs dist/abmesh.wasm as a Wasm OCI image that Istio's image fetcher pulls, with no Docker
engine: an OCI image layout (dist/oci/) and the same layout as one tarball (an "oci-archive",
dist/abmesh-oci.tar). Prints the image manifest's digest, which is what a WasmPlugin's
`sha256` (or `url: oci://…@sha256:…`) must name.

Variant: Istio's *compat* image (solo-io/wasm spec-compat.md; istio pkg/wasm/imagefetcher.go,
extractOCIStandardImage): a standard OCI image manifest whose last layer is
application/vnd.oci.image.layer.v1.tar+gzip holding `plugin.wasm`. Istio tries it first, and
every OCI registry and client (ghcr.io, ECR, Harbor, skopeo, crane) stores and copies standard
media types, where some refuse the *oci* variant's custom ones.

Every byte is a function of the wasm and the version only (no timestamps, owners or commit), so
the same wasm always gives the same digest and the examples can pin it.

Usage: oci_image.py WASM VERSION OUT_LAYOUT_DIR OUT_TARBALL"""
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SOURCE = "https://github.com/abmesh/abmesh"


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def tar_of(files):
    """A POSIX tar of (name, bytes) with every field fixed (owner 0, mode 0644, time 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzipped(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as z:
        z.write(data)
    return buf.getvalue()


def descriptor(media_type, blob, annotations=None):
    d = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    if annotations:
        d["annotations"] = annotations
    return d


def build(wasm, version):
    """The image's blobs, its manifest and the layout's index.json."""
    layer_tar = tar_of([("plugin.wasm", wasm)])
    layer = gzipped(layer_tar)
    config = canonical({
        "architecture": "wasm",
        "os": "proxy-wasm",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    })
    annotations = {
        "org.opencontainers.image.title": "abmesh",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.source": SOURCE,
        "org.opencontainers.image.description": "abmesh proxy-wasm filter (Wasm image, compat variant: plugin.wasm)",
    }
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, config),
        "layers": [descriptor(LAYER, layer, {"org.opencontainers.image.title": "plugin.wasm"})],
        "annotations": annotations,
    })
    index = canonical({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor(MANIFEST, manifest, {"org.opencontainers.image.ref.name": version})],
    })
    return [config, layer, manifest], manifest, index


def main():
    wasm_path, version, out_dir, tarball = sys.argv[1:5]
    wasm = open(wasm_path, "rb").read()
    if not wasm.startswith(b"\0asm"):
        sys.exit(f"oci_image: {wasm_path} is not a WebAssembly module")
    blobs, manifest, index = build(wasm, version)
    files = [("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
    files += [("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b) for b in blobs]
    shutil.rmtree(out_dir, ignore_errors=True)
    for name, data in files:
        path = os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    with open(tarball, "wb") as f:
        f.write(tar_of(files))
    print("sha256:" + hashlib.sha256(manifest).hexdigest())


if __name__ == "__main__":
    main()
