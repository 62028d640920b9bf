"""Pins every abmesh module reference in the repository to one image digest: the `sha256:`
line right after each `url: oci://registry.example.com/abmesh/abmesh:…` line, in examples/
and in the README's and docs/' YAML blocks. Usage: pin.py ROOT sha256:<hex>"""
import glob
import re
import sys

root, digest = sys.argv[1], sys.argv[2].removeprefix("sha256:")
if not re.fullmatch(r"[0-9a-f]{64}", digest):
    sys.exit(f"pin: not a sha256 digest: {sys.argv[2]}")
# Quoted: YAML would read a digest of decimal digits only as a number.
PIN = re.compile(r'(url: oci://registry\.example\.com/abmesh/abmesh:\S+\n\s*sha256: )"[0-9a-f]{64}"')
files = glob.glob(f"{root}/examples/**/*.y*ml", recursive=True) + [f"{root}/README.md"] + glob.glob(f"{root}/docs/*.md")
pinned = 0
for path in sorted(files):
    text = open(path).read()
    new, n = PIN.subn(lambda m: f'{m.group(1)}"{digest}"' , text)
    pinned += n
    if new != text:
        open(path, "w").write(new)
        print(f"pinned {path[len(root) + 1:]} ({n})")
if pinned == 0:
    sys.exit("pin: no abmesh module reference found")
print(f"{pinned} references pin sha256:{digest}")
