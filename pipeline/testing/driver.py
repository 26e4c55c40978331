"""The program each notebook's container runs: papermill's Python API, nothing else.

It does what the `papermill` command did: execute the notebook (same options as
`papermill --log-output --no-progress-bar`, same exit codes: 1 on an error, 138 when the
kernel died). The HTML rendering is made on the host from the executed notebook
(`tasks.run_notebook`), so no notebook pays for importing nbconvert.

The driver process validates notebooks with nbformat, which needs no JSON-schema format
checker; jsonschema imports every optional one it finds, and `rfc3987_syntax` compiles a
grammar at import (seconds). papermill tries its remote-storage handlers at import (boto3,
gcsfs, pyarrow, ...: seconds in a Deep Learning Containers image); the driver reads and
writes local paths only. All of them are kept out of this process only; the kernel, a
process of its own, sees the image as it is.

Kernel start: the kernel client does not wait for 0.2 s of IOPub silence after the
kernel's first reply (jupyter_client's flush; nbclient reads only the replies to its own
requests). At the end the kernel is killed rather than asked to shut down (its container,
or in a shared container its session, goes right after), unless a cell still runs (a
timeout): that one is interrupted and asked, so its traceback says where it was.

`"pycache": FOLDER` names the run's bytecode cache (`tasks.warm_up`): the driver imports
with it as `sys.pycache_prefix`, and so does the start-up of a kernel whose kernelspec's
language is Python (PYTHONPYCACHEPREFIX, set for no other kernel); the kernel then
forgets it (`FORGET`, run silently: no output, no history, no execution count, no name)
before the notebook's first cell. A kernel that does not (an error, no reply in time, a
kernel that turns out not to speak Python) is stopped and the notebook starts again in a
kernel without the cache. `{"warm": [KERNEL, ...]}` instead of a notebook runs an empty
cell in each of those kernels that is a Python one, which fills the cache.

Where the notebooks of a run share one container (`tests.isolation: run`), a failure
after the cgroup's OOM-kill counter went up exits 137, as a container killed for memory
does.

The driver first runs itself again under the interpreter of the `papermill` script, if
there is one and it is not `python3` (`#!/usr/bin/env NAME` is looked up on PATH), before
importing anything. Without papermill it says `No module named papermill` and exits 127,
as a missing command would. At the end the driver kills every other process of its
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

import json, logging, signal, time, traceback

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
# The run's bytecode cache, for this process and (until its first request) the kernel's.
prefix = job.get("pycache") or ""
if prefix:
    sys.pycache_prefix = prefix
    if "warm" in job:
        sys.dont_write_bytecode = False
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

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

# Run silently in a Python kernel before the notebook: its code imports without the cache.
FORGET = (
    '__import__("os").environ.pop("PYTHONPYCACHEPREFIX", None)\n'
    "__import__('sys').pycache_prefix = None\n"
)

def python_kernel(name):
    # Whether the kernelspec `name` runs Python: only such a kernel starts from the cache.
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        return str(KernelSpecManager().get_kernel_spec(name).language).lower() == "python"
    except Exception:
        return False

class CacheKept(RuntimeError):
    # The kernel started from the cache and did not forget it: it is started again without.
    pass

cache = {"on": False, "kept": False}  # the kernel being started reads the cache; it did not forget it

def quick_kernels():
    # nbclient's kernel manager, with a client ready at the kernel's first kernel_info reply
    # (jupyter_client then waits for 0.2 s of IOPub silence) that makes a Python kernel
    # forget the bytecode cache. None: the defaults, and no cache for the kernel.
    try:
        from queue import Empty
        from jupyter_client import AsyncKernelManager
        from jupyter_client.asynchronous import AsyncKernelClient
        from nbclient import NotebookClient
        from traitlets import default
    except ImportError:
        return None
    if not hasattr(AsyncKernelClient, "_handle_kernel_info_reply"):
        return None
    if not {"on_cell_execute", "on_cell_executed"} <= set(NotebookClient.class_trait_names()):
        return None  # an older nbclient: without these hooks a timed-out cell would be killed at once

    async def awaited(value):
        return (await value) if hasattr(value, "__await__") else value

    class QuickClient(AsyncKernelClient):
        async def wait_for_ready(self, timeout=None):
            until = time.monotonic() + (timeout if timeout is not None else float("inf"))
            while True:
                self.kernel_info()
                try:
                    reply = await awaited(self.shell_channel.get_msg(timeout=1))
                except Empty:
                    reply = None
                if reply is not None and reply.get("msg_type") == "kernel_info_reply":
                    try:  # IOPub is connected once it carries the reply's status
                        await awaited(self.iopub_channel.get_msg(timeout=0.2))
                    except Empty:
                        pass
                    else:
                        self._handle_kernel_info_reply(reply)
                        language = ((reply.get("content") or {}).get("language_info") or {}).get("name")
                        if cache["on"] and not (language == "python" and await self.forget_cache(until)):
                            cache["kept"] = True
                            raise CacheKept("the kernel did not forget the bytecode cache")
                        return
                if not await awaited(self.is_alive()):
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > until:
                    raise RuntimeError("Kernel didn't respond in %d seconds" % timeout)

        async def forget_cache(self, until):
            # True once the kernel ran FORGET; False when it failed or did not answer in time.
            request = self.execute(FORGET, silent=True, store_history=False)
            while time.monotonic() < until:
                try:
                    reply = await awaited(self.shell_channel.get_msg(timeout=1))
                except Empty:
                    if not await awaited(self.is_alive()):
                        raise RuntimeError("Kernel died before it started")
                    continue
                if (reply.get("parent_header") or {}).get("msg_id") == request:
                    content = reply.get("content") or {}
                    if content.get("status") == "ok":
                        return True
                    logging.warning(
                        "the kernel did not forget the bytecode cache (%s: %s); starting it without",
                        content.get("ename"), content.get("evalue"),
                    )
                    return False
            logging.warning("the kernel did not forget the bytecode cache in time; starting it without")
            return False

    class QuickKernels(AsyncKernelManager):
        @default("client_factory")
        def _quick_client(self):
            return QuickClient

        async def shutdown_kernel(self, now=False, restart=False):
            # Killed at once after its last reply; a cell still running (a timeout) is
            # interrupted and gets the time to send its traceback (where it was).
            return await super().shutdown_kernel(now=now or not cell["running"], restart=restart)

    return QuickKernels

cell = {"running": False}  # a cell was sent and its reply has not come

def sent(**_):
    cell["running"] = True

def replied(**_):
    cell["running"] = False

def execute(source, output, parameters, kernel, timeout, cwd):
    options = {}
    manager = quick_kernels()
    if manager is not None:
        options.update(kernel_manager_class=manager, on_cell_execute=sent, on_cell_executed=replied)
    # Only a Python kernel reads the cache at start-up, and it forgets it before the first cell.
    cache.update(on=bool(prefix and manager is not None and python_kernel(kernel)), kept=False)
    while True:
        if cache["on"]:
            os.environ["PYTHONPYCACHEPREFIX"] = prefix  # the kernel's start-up reads the cache
        elif prefix:
            os.environ.pop("PYTHONPYCACHEPREFIX", None)
        try:
            papermill.execute_notebook(
                source,
                output,
                parameters=parameters,
                kernel_name=kernel,
                execution_timeout=timeout,
                cwd=cwd,
                log_output=True,
                progress_bar=False,
                request_save_on_cell_execute=True,
                **options,
            )
            return
        except Exception:
            if not cache["kept"]:
                raise
            cache.update(on=False, kept=False)  # no cell ran: the notebook starts again, without the cache

logging.basicConfig(level=logging.INFO, format="%(message)s")
failure = None
code = 0
try:
    if "warm" in job:
        import nbformat
        # a kernel that fails here fails its notebooks, not the cache; only Python kernels read it
        for kernel in [k for k in job["warm"] if python_kernel(k)]:
            empty = nbformat.v4.new_notebook(
                cells=[nbformat.v4.new_code_cell("pass")],
                metadata={"kernelspec": {"name": kernel, "display_name": kernel}},
            )
            try:
                execute(empty, None, {}, kernel, 60, "/tmp")
            except Exception:
                traceback.print_exc()
    else:
        execute(job["input"], job["output"], job["parameters"], job["kernel"], job["timeout"], job["cwd"])
except DeadKernelError:
    failure, code = traceback.format_exc(), 138
except Exception:
    failure, code = traceback.format_exc(), 1
if failure and oom_kills() > oom_before:
    code = 137  # a process of this notebook was killed for memory, as a container's OOM kill reads
if failure:
    sys.stderr.write(failure)
sys.stderr.flush()
sys.stdout.flush()
kill_leftovers()
os._exit(code)
"""
