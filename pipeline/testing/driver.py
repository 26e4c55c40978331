"""The program each notebook's container runs: papermill's Python API, then the HTML rendering.

One process does what the `papermill` command and a separate `jupyter nbconvert`
container did: execute the notebook (same options as `papermill --log-output
--no-progress-bar`, same exit codes: 1 on an error, 138 when the kernel died), then
render the executed notebook to HTML beside it. nbconvert is imported in a thread once the kernel
has started, while the cells run, so the rendering costs little more than its template.

The driver process validates notebooks with nbformat, which needs no JSON-schema format
checker; jsonschema imports every optional one it finds, and `rfc3987_syntax` compiles a
grammar at import (seconds). papermill tries its remote-storage handlers at import (boto3,
gcsfs, pyarrow, ...: seconds in a Deep Learning Containers image); the driver reads and
writes local paths only. All of them are kept out of this process only; the kernel, a
process of its own, sees the image as it is.

Where the notebooks of a run share one container (`tests.isolation: run`), a failure
after the cgroup's OOM-kill counter went up exits 137, as a container killed for memory
does.

The driver first runs itself again under the interpreter of the `papermill` script, if
there is one and it is not `python3` (`#!/usr/bin/env NAME` is looked up on PATH), before
importing anything. Without papermill it says `No module named papermill` and exits 127,
as a missing command would.

Papermill's result is written to `<output>.status` (`{"exit_code": N}`) before the
rendering: the host takes the notebook's verdict from it, so a kill or deadline while
rendering costs the HTML only. At the end the driver kills every other process of its
session (it calls `setsid` at start): in a run's shared container nothing a notebook left
running survives into the next notebook.
"""

from __future__ import annotations

SCRIPT = r"""
import os, shutil, sys

def papermill_python():
    # The interpreter of the `papermill` script (`#!/path/python` or `#!/usr/bin/env [-S] NAME`).
    script = shutil.which("papermill")
    if not script:
        return ""
    try:
        with open(script, "rb") as handle:
            first = handle.readline().decode(errors="replace").strip()
    except OSError:
        return ""
    words = first[2:].split() if first.startswith("#!") else []
    if words and os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return (shutil.which(names[0]) or "") if names else ""
    return words[0] if words and os.access(words[0], os.X_OK) else ""

# Run under papermill's own Python before importing anything (the image's python3 may be another one).
interpreter = papermill_python()
if interpreter and os.path.realpath(interpreter) != os.path.realpath(sys.executable):
    os.execv(interpreter, [interpreter, os.path.abspath(__file__), *sys.argv[1:]])

import json, logging, signal, threading, traceback

try:
    os.setsid()  # this notebook's processes: the ones left running are killed at the end
    own_session = True
except OSError:
    own_session = False

# jsonschema's optional format checkers, and papermill's remote-storage handlers (the
# driver reads and writes local paths only)
UNNEEDED = ("rfc3987_syntax", "rfc3987", "isoduration", "uri_template", "webcolors", "fqdn",
            "boto3", "azure.datalake", "azure.storage.blob", "gcsfs", "pyarrow", "github")
for name in UNNEEDED:
    sys.modules.setdefault(name, None)

job = json.loads(sys.argv[1])

def oom_kills():
    # The container's cgroup (v2, then v1): how often the kernel killed a process for memory.
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
    return 0

oom_before = oom_kills()
try:
    import papermill
    from nbclient.exceptions import DeadKernelError
except ImportError as e:
    if "papermill" not in str(e) and getattr(e, "name", "") not in ("papermill", "nbclient"):
        raise
    print("No module named papermill", file=sys.stderr)
    sys.exit(127)

def leftovers():
    # Every other process of this driver's session: what the notebook started and left running.
    me, session = os.getpid(), os.getsid(0)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 3 and int(fields[3]) == session:
                yield int(entry)

def kill_leftovers():
    if not own_session:
        return
    for pid in leftovers():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

exporter = {}

def load_exporter():
    try:
        from nbconvert import HTMLExporter
        exporter["html"] = HTMLExporter()
    except Exception as e:
        exporter["error"] = f"{type(e).__name__}: {e}"

loader = threading.Thread(target=load_exporter, daemon=True)

def kernel_ready(**_):
    # The kernel has started: load nbconvert while the cells run.
    if job.get("html") and loader.ident is None:
        loader.start()

logging.basicConfig(level=logging.INFO, format="%(message)s")
failure = None
code = 0
try:
    papermill.execute_notebook(
        job["input"],
        job["output"],
        parameters=job["parameters"],
        kernel_name=job["kernel"],
        execution_timeout=job["timeout"],
        cwd=job["cwd"],
        log_output=True,
        progress_bar=False,
        request_save_on_cell_execute=True,
        on_notebook_start=kernel_ready,
    )
except DeadKernelError:
    failure, code = traceback.format_exc(), 138
except Exception:
    failure, code = traceback.format_exc(), 1
if failure and oom_kills() > oom_before:
    code = 137  # a process of this notebook was killed for memory, as a container's OOM kill reads

# The notebook's verdict, before the rendering: a kill while rendering costs the HTML only.
with open(job["output"] + ".status.tmp", "w") as handle:
    json.dump({"exit_code": code}, handle)
os.replace(job["output"] + ".status.tmp", job["output"] + ".status")

if job.get("html") and os.path.isfile(job["output"]):
    if loader.ident is None:
        load_exporter()
    else:
        loader.join()
    try:
        if "html" not in exporter:
            raise RuntimeError(exporter.get("error", "nbconvert did not load"))
        import nbformat
        body, _ = exporter["html"].from_notebook_node(nbformat.read(job["output"], as_version=4))
        with open(job["html"] + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(job["html"] + ".tmp", job["html"])
    except Exception as e:
        with open(job["html"] + ".error", "w", encoding="utf-8") as handle:
            handle.write(f"{type(e).__name__}: {e}\n")
if failure:
    sys.stderr.write(failure)
sys.stderr.flush()
sys.stdout.flush()
kill_leftovers()
os._exit(code)
"""
