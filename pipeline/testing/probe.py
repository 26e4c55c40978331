"""The script the image checks run inside a version (its own python, no network, its own user).

It prints one JSON document: the kernel and papermill (IMG002), the entrypoint (IMG002),
unresolved shared libraries of every ELF object of the Python environments (IMG001),
and whether the user's HOME and working folder are writable (IMG004).
"""

from __future__ import annotations

SCRIPT = r"""
import glob, json, os, pwd, shutil, site, subprocess, sys, sysconfig, tempfile

def run(args, timeout=120, env=None):
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        return done.returncode, done.stdout, done.stderr
    except Exception as e:
        return None, "", f"{type(e).__name__}: {e}"

def last(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""

want = json.loads(os.environ.get("ENVCTL_PROBE", "{}"))
out = {"python": sys.executable}

# IMG002: the kernel, papermill, the entrypoint
kernel = {"name": want.get("kernel") or "python3", "argv0": "", "error": ""}
try:
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec(kernel["name"])
    kernel["argv0"] = spec.argv[0]
    code, stdout, stderr = run([spec.argv[0], "-c", "import ipykernel, sys; print(sys.executable)"], 60)
    if code == 0:
        kernel["executable"] = last(stdout)
    else:
        kernel["error"] = last(stderr) or f"exit {code}"
except Exception as e:
    kernel["error"] = f"{type(e).__name__}: {e}"
out["kernel"] = kernel
papermill = shutil.which("papermill")
out["papermill"] = {"path": papermill or "", "error": ""}
if papermill:
    code, stdout, stderr = run([papermill, "--version"], 60)
    if code != 0:
        out["papermill"]["error"] = last(stderr) or f"exit {code}"
entry = want.get("entry") or ""
where = entry if "/" in entry else (shutil.which(entry) or "")
out["entry"] = {"program": entry, "path": where,
                "ok": bool(entry) and os.path.isfile(where) and os.access(where, os.X_OK)}

# IMG001: ELF objects of the Python environments and what the loader can't resolve
roots = set(site.getsitepackages() + [site.getusersitepackages(), sysconfig.get_paths()["platlib"]])
if kernel.get("executable") and kernel["executable"] != sys.executable:
    ask = "import site; print('\n'.join(site.getsitepackages()))"
    code, stdout, _ = run([kernel["executable"], "-c", ask])
    roots.update(stdout.split())
for conda in (os.environ.get("CONDA_PREFIX"), "/opt/conda"):
    if conda:
        roots.update(glob.glob(os.path.join(conda, "lib", "python3*", "site-packages")))
objects = []
for root in sorted(r for r in roots if os.path.isdir(r)):
    for folder, _, files in os.walk(root):
        for name in files:
            if ".so" not in name:
                continue
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        objects.append(path)
            except OSError:
                pass
owners = {}
try:
    import importlib.metadata as md
    wanted = set(objects)
    for dist in md.distributions():
        for f in dist.files or []:
            located = os.path.normpath(str(dist.locate_file(f)))
            if located in wanted:
                owners[located] = dist.metadata["Name"]
except Exception:
    pass
ldd = shutil.which("ldd")
loaders = [p for g in ("/lib64/ld-linux*.so*", "/lib/ld-linux*.so*", "/lib/*/ld-linux*.so*")
           for p in glob.glob(g)]
missing = {}
def parse(text, single=None):
    current = single
    for line in text.splitlines():
        if single is None and line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
        elif "=> not found" in line and current:
            missing.setdefault(current, []).append(line.strip().split(" ", 1)[0])
# Libraries vendored by auditwheel (`<pkg>.libs/`) find their siblings through the RPATH
# of the extension that loads them: resolve each such folder with itself on the path.
groups = {}
for path in objects:
    folder = os.path.dirname(path)
    groups.setdefault(folder if folder.endswith(".libs") else "", []).append(path)
for folder, group in sorted(groups.items()):
    env = dict(os.environ, LD_LIBRARY_PATH=folder) if folder else None
    if ldd:
        for i in range(0, len(group), 64):
            batch = group[i:i + 64]
            _, stdout, _ = run([ldd, *batch], env=env)
            parse(stdout, batch[0] if len(batch) == 1 else None)
    elif loaders:
        for path in group:
            _, stdout, _ = run([loaders[0], "--list", path], env=env)
            parse(stdout, path)
out["elf"] = {"objects": len(objects), "loader": ldd or (loaders[0] if loaders else ""),
              "missing": [{"file": p, "distribution": owners.get(p, ""), "libraries": sorted(set(l))}
                          for p, l in sorted(missing.items())]}

# IMG004: the user, HOME and the working folder
def writable(folder, create=False):
    if create:  # a folder the notebook makes: its nearest existing parent must be writable
        while folder and not os.path.exists(folder):
            folder = os.path.dirname(folder.rstrip("/")) or "/"
    if not folder or not os.path.isdir(folder):
        return "does not exist"
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return ""
    except OSError as e:
        return e.strerror or str(e)
try:
    user = pwd.getpwuid(os.getuid()).pw_name
except KeyError:
    user = str(os.getuid())
home = os.environ.get("HOME", "")
out["user"] = {"name": user, "uid": os.getuid(), "home": home, "cwd": os.getcwd(),
               "home_error": writable(home) if home else "HOME is not set",
               "cwd_error": writable(os.getcwd()),
               "folders": {f: writable(f, create=True) for f in want.get("folders", [])}}
print(json.dumps(out))
"""
