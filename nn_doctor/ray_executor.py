"""The Ray executor (`--executor ray`, the optional `ray` extra): a round of probes fans out over a cluster.

Each probe is one Ray task running the same `run_probe` as the local executor, so for one seed the
records (and hence the statuses, the recommended lr, the findings and first_fix) are the local ones;
only timings differ.

- Cluster: the one named by --ray-address, else $RAY_ADDRESS, else a new local Ray (shut down again
  by close()). A cluster that is already up (`ray start --head`) is joined once per command, its probes
  all run there, and close() only disconnects: the cluster and its nodes stay up for the next command.
  A Ray that the caller already initialised is used as it is and left running.
- Address checks (check_cluster, also called by the CLI before torch is imported): an address that
  refuses, does not route, is not a Ray head, or wants a token this process lacks (Ray 2.52+ token
  authentication: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)
  is a UsageError (exit 2, one line) within seconds: a plain socket first (SOCKET_TIMEOUT_S), then one
  bounded cluster-id request to the GCS (GCS_ANSWER_S), where ray.init would retry for ~20 s; ray.init
  itself then gets CONNECT_TIMEOUT_S.
- Rounds: every round's probes are submitted at once, longest first (steps x batch), and run side by
  side, as many at a time as the cluster has slots; `rounds` records each round's wall time and its
  probes' summed time (executor.py).
- Resources: a probe task asks for 1 CPU, plus `gpus_per_probe` GPUs (default 1; fractions share a GPU)
  when the probes run on CUDA. The device is the one the driver resolved (cpu or cuda; on a worker,
  cuda is the GPU Ray gave the task).
- Data: the command's ArrayData (numpy arrays) go to the object store once per executor (ray.put in
  __init__); a task gets the reference wrapped in a list, so Ray does not resolve it per task, and each
  worker process builds its DeviceData from it once (a small per-process cache keyed by the
  reference's hex and the device).
- Warm-up: __init__ sends one probe-shaped task per slot of the cluster (at most WARM_MAX) that imports
  torch and nn-doctor and caches the data on the device, and checks that the workers run this
  nn-doctor: a cold worker costs seconds (torch's import, a CUDA context), paid once, not per round.
- User code (model.class, training.step): the spec's folder's Python files are zipped and put once;
  a worker imports from the folder itself when it holds the same files, else from the shipped copy
  extracted under the worker's temp dir; spec.base_dir is pointed there, so import_object puts it on
  sys.path as it does locally.
- Faults: a task that raises outside run_probe's own handling, a worker that dies or is killed for
  memory, a lost result: retried once, then recorded as a failed probe (stopped="error", error="...").
  No wait is unbounded: ray.wait polls every POLL_S; past the budget (+ grace) and after STALL_S with
  no result the outstanding tasks are cancelled. Ray's own retries are off (max_retries=0), so a
  probe runs at most twice.
- Budget: the clock is the command's BudgetClock. Tasks carry the absolute deadline; a task that starts
  after it returns at once and is recorded as skipped (named in `skipped`), a running probe stops at
  it by itself (settings.budget_s), and whatever is still outstanding BUDGET_GRACE_S later is cancelled.
- Ctrl-C: the outstanding tasks are cancelled and KeyboardInterrupt re-raised, so the command reports
  what finished.

Ray is imported only here, and only when a RayExecutor is made: the base install and --help stay light.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable

from .errors import UsageError
from .executor import BudgetClock, ProbeTask, RoundTimer, skipped_record

if TYPE_CHECKING:   # torch comes with the probes: check_cluster() runs before the CLI pays for it
    from .probe import DeviceData, ProbeRecord

# ---- constants ------------------------------------------------------------------------------------
INSTALL_HINT = "--executor ray needs Ray: pip install 'nn-doctor[ray]'"
SOCKET_TIMEOUT_S = 3.0      # the TCP check of a cluster address (refused / unroutable fails here): covers
                            # Linux's first SYN retransmission (1 s); a reachable head answers in milliseconds
GCS_ANSWER_S = 2.0          # the head's GCS answering one cluster-id request: milliseconds when it is one
                            # (a token refusal included, measured 10-20 ms); a listener that is not a GCS
                            # keeps Ray's client retrying for ~12 s, which this cuts short
CONNECT_TIMEOUT_S = float(os.environ.get("NN_DOCTOR_RAY_CONNECT_TIMEOUT_S", 30))   # ray.init after the checks
HANDSHAKE_TIMEOUT_S = float(os.environ.get("NN_DOCTOR_RAY_HANDSHAKE_TIMEOUT_S", 120))  # first worker answer
POLL_S = 0.5                # ray.wait timeout: Ctrl-C, the budget and the stall watch are seen this often
ATTEMPTS = 2                # a failed probe task is retried once
BUDGET_GRACE_S = 5.0        # running probes stop at their own budget check; cancelled if still out after
BUDGET_GRACE_FRACTION = 0.1  # ... max(5 s, 10% of the budget)
STALL_S = float(os.environ.get("NN_DOCTOR_RAY_STALL_S", 1800))   # no result at all for this long: cancel
HEALTH_EVERY_S = 10.0       # while tasks are out, how often the cluster is asked whether a node can still run them
WORKER_CACHE = 2            # DeviceData kept per worker process (the commands of one job share workers)
WARM_MAX = 32               # warm-up tasks at most (one per probe slot of the cluster)
CODE_SUFFIX = ".py"         # what of the spec's folder is shipped for model.class / training.step
CODE_MAX_BYTES = 64 << 20   # more Python than this under the spec's folder: put the spec in its own folder
CODE_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages", "build", "dist"}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def _line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


# ---- user code: the spec's folder, shipped once -----------------------------------------------------

def _code_files(root: str) -> list[str]:
    """Python files under root (relative, sorted), skipping hidden folders, caches and virtualenvs."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in CODE_SKIP_DIRS
                             and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg")))
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames if f.endswith(CODE_SUFFIX)]
    return sorted(out)


def _code_digest(root: str, files: list[str] | None = None) -> tuple[str, dict[str, bytes]]:
    files = _code_files(root) if files is None else files
    h = hashlib.sha256()
    contents: dict[str, bytes] = {}
    total = 0
    for rel in files:
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                body = fh.read()
        except OSError:
            continue
        total += len(body)
        if total > CODE_MAX_BYTES:
            raise UsageError(f"the spec's folder {root} holds over {CODE_MAX_BYTES >> 20} MiB of Python to ship "
                             f"to the Ray workers; put the spec and its model code in a folder of their own")
        contents[rel] = body
        h.update(rel.replace(os.sep, "/").encode() + b"\0" + hashlib.sha256(body).digest())
    return h.hexdigest()[:20], contents


def code_bundle(root: str) -> tuple[str, bytes]:
    """(digest, zip of the Python files under root): what the workers import user code from."""
    digest, contents = _code_digest(root)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, body in contents.items():
            zf.writestr(rel.replace(os.sep, "/"), body)
    return digest, buf.getvalue()


# ---- the worker side ----------------------------------------------------------------------------------
# Module state lives in each worker process: the commands of one job reuse their workers.
_DATA: "OrderedDict[str, DeviceData]" = OrderedDict()
_CODE_DIRS: dict[str, str] = {}


def _worker_device(device: str):
    import torch
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise RuntimeError(f"the probes run on {device} but this Ray worker ({socket.gethostname()}) sees no "
                           f"CUDA GPU")
    # Ray narrows CUDA_VISIBLE_DEVICES to the GPU(s) it gave this task: its first one is cuda:0 here.
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return torch.device("cuda", 0)
    import ray
    ids = ray.get_gpu_ids()
    return torch.device("cuda", int(ids[0])) if ids else torch.device("cuda", dev.index or 0)


def _worker_data(box: list, device: str) -> DeviceData:
    """The command's data on this worker's device: fetched and moved once per worker process."""
    import ray

    from .probe import DeviceData
    ref = box[0]
    key = f"{ref.hex()}/{device}"
    data = _DATA.get(key)
    if data is None:
        data = DeviceData(ray.get(ref), _worker_device(device))
        _DATA[key] = data
        while len(_DATA) > WORKER_CACHE:
            _DATA.popitem(last=False)
    _DATA.move_to_end(key)
    return data


def _worker_code_dir(code: tuple) -> str:
    """Where this worker imports the spec's code from: the spec's own folder when it holds the same
    Python files (a local or shared-filesystem cluster), else the shipped copy, extracted once per node."""
    import ray
    digest, box, original = code
    known = _CODE_DIRS.get(digest)
    if known and os.path.isdir(known):
        return known
    if original and os.path.isdir(original) and _code_digest(original)[0] == digest:
        where = original
    else:
        parent = os.path.join(tempfile.gettempdir(), "nn_doctor_code")
        where = os.path.join(parent, digest)
        if not os.path.isdir(where):
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{digest}-", dir=parent)
            with zipfile.ZipFile(io.BytesIO(ray.get(box[0]))) as zf:
                zf.extractall(tmp)
            try:
                os.replace(tmp, where)            # atomic: workers of one node race to the same folder
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
    _CODE_DIRS[digest] = where
    return where


def _hear_cancel() -> None:
    """ray.cancel stops a running task by raising KeyboardInterrupt as SIGINT would; a worker whose SIGINT is
    ignored (a cluster started from a background job: POSIX shells ignore it there) would never stop."""
    import signal
    try:
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:   # not the worker's main thread: nothing to set
        pass


def _probe_task(box: list, code: tuple | None, spec, settings, overrides: dict, device: str,
                deadline: float | None, left: float | None) -> ProbeRecord | None:
    """One probe on a worker. None: the budget ran out before it started (the driver records a skip)."""
    from .probe import run_probe
    _hear_cancel()
    if deadline is not None:
        remaining = min(left, deadline - time.time())
        if remaining <= 0:
            return None
        settings.budget_s = min(settings.budget_s or remaining, remaining)
    if code is not None:
        spec.base_dir = _worker_code_dir(code)
    return run_probe(spec, _worker_data(box, device), settings, overrides)


def _warm_up(box: list, device: str) -> dict[str, Any]:
    """A worker's first task: import torch and nn-doctor and put the data on the device (on CUDA this makes
    the context), so the probes find it warm; answers what it runs."""
    import torch
    from . import __version__
    _worker_data(box, device)
    return {"nn_doctor": __version__, "torch": torch.__version__.split("+")[0],
            "python": "%d.%d" % sys.version_info[:2], "host": socket.gethostname()}


# ---- the driver side ----------------------------------------------------------------------------------

def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a host:port cluster address (also under a scheme); None for `auto` and the like."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _tcp_check(address: str, host: str, port: int) -> None:
    """Fail in seconds, with the reason, when nothing listens at a host:port cluster address."""
    try:
        socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S).close()
    except OSError as err:
        why = "timed out" if isinstance(err, socket.timeout) else (err.strerror or _line(err)).lower()
        raise UsageError(f"cannot reach the Ray cluster at {address}: {why} (is `ray start --head` running "
                         f"there? check --ray-address / RAY_ADDRESS)") from None


TOKEN_HELP = ("`ray get-auth-token` on the head node prints it; see the README's section on Ray")


def _token_source() -> str:
    """Where Ray takes this process's token from (its documented order)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return "~/.ray/auth_token"


def _token_mode() -> bool:
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"


def _token_check() -> None:
    """With RAY_AUTH_MODE=token, a token must be at hand: Ray's own client aborts the process (a C++
    check) when RAY_AUTH_TOKEN_PATH names a missing file, and retries for ~20 s without one."""
    if not _token_mode():
        return
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:         # a Ray without token authentication: nothing to check
        return
    try:
        has = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    except Exception as err:    # RAY_AUTH_TOKEN_PATH names a missing or empty file
        raise UsageError(f"RAY_AUTH_MODE=token: {_line(err).split('. ')[0]}") from None
    if not has:
        raise UsageError("RAY_AUTH_MODE=token, but no token is set: put the cluster's token in RAY_AUTH_TOKEN, "
                         f"in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token ({TOKEN_HELP})")


def _gcs_check(ray, address: str, host: str, port: int) -> None:
    """Ask the head's GCS for the cluster's id, as ray.init's first step does, but once and bounded: a
    token refusal or a listener that is not a Ray GCS fails here in milliseconds (ray.init would retry
    them for ~20 s)."""
    try:
        from ray._raylet import InnerGcsClient
        ask = InnerGcsClient.standalone
    except (ImportError, AttributeError):   # another Ray: ray.init decides, under CONNECT_TIMEOUT_S
        return
    box: dict[str, BaseException | bool] = {}

    def call() -> None:
        try:
            ask(f"{host}:{port}", None, int(GCS_ANSWER_S * 1000))
            box["ok"] = True
        except BaseException as err:     # noqa: BLE001 - reported below
            box["err"] = err

    th = threading.Thread(target=call, name="nn-doctor-ray-check", daemon=True)
    with _captured_stderr():            # Ray's C++ client logs each failed try on fd 2
        th.start()
        th.join(GCS_ANSWER_S)
    if "ok" in box:
        return
    err = box.get("err")
    if err is None:
        raise UsageError(f"something listens at {address}, but it did not answer as a Ray cluster within "
                         f"{GCS_ANSWER_S:.0f} s (is it the head's GCS port, 6379 unless `ray start --port` "
                         f"said otherwise?)")
    if isinstance(err, getattr(ray.exceptions, "AuthenticationError", ())) or "InvalidAuthToken" in str(err):
        if _token_mode():
            raise UsageError(f"the Ray cluster at {address} refused this process's token (from {_token_source()}): "
                             f"it is not the cluster's ({TOKEN_HELP})")
        raise UsageError(f"the Ray cluster at {address} wants an authentication token: set RAY_AUTH_MODE=token and "
                         f"the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token ({TOKEN_HELP})")
    raise UsageError(f"something listens at {address}, but it is not a Ray cluster's GCS: {_line(err)}")


def check_cluster(address: str | None) -> None:
    """Fail within seconds, with one line (a UsageError), when the cluster at `address` (else $RAY_ADDRESS)
    cannot be used: nothing listens there (refused, unroutable), what listens is not a Ray head, or it
    wants a token this process does not have or has wrong. Needs no torch: the CLI calls it first.
    Without an address (a local Ray is started) or with one that is not host:port, nothing to check."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    hp = _host_port(address) if address else None
    if hp is None:
        return
    _tcp_check(address, *hp)
    if "://" in address:        # ray:// is Ray Client's own protocol: ray.init decides
        return
    ray = _import_ray()
    _token_check()
    _gcs_check(ray, address, *hp)


def _init_ray(ray, address: str | None) -> bool:
    """Connect (address) or start a local Ray; True when this call started or connected it."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}   # worker prints stay off our stdout
    if not address:
        try:        # a new local Ray; in the main thread: Ray's child processes die with the thread that forks them
            ray.init(address="local", include_dashboard=False, **quiet)
        except BaseException as err:
            try:        # Ctrl-C or a failure half-way: stop what was started
                ray.shutdown()
            except Exception:
                pass
            if isinstance(err, Exception):
                raise UsageError(f"cannot start a local Ray: {_line(err)}") from None
            raise
        return True
    check_cluster(address)
    box: dict[str, BaseException | bool] = {}

    def connect() -> None:
        try:
            ray.init(address=address, **quiet)
            box["ok"] = True
        except BaseException as err:     # noqa: BLE001 - reported by the caller
            box["err"] = err

    th = threading.Thread(target=connect, name="nn-doctor-ray-connect", daemon=True)
    # Ray's C++ client logs every failed retry straight to fd 2: keep them while connecting, replay them
    # when it connects, and on failure say in one line what they were about.
    with _captured_stderr() as log:
        th.start()
        th.join(CONNECT_TIMEOUT_S)
    if th.is_alive():
        raise UsageError(f"the Ray cluster at {address} did not answer within {CONNECT_TIMEOUT_S:.0f} s "
                         f"(something listens there, but not a Ray GCS?)")
    if "err" in box:
        err = box["err"]
        text = log.text + str(err)
        if "InvalidAuthToken" in text or "Unauthenticated" in text:
            raise UsageError(f"the Ray cluster at {address} refused the connection: it wants its authentication "
                             f"token (set RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN or ~/.ray/auth_token; {TOKEN_HELP})")
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {_line(err)}")
    sys.stderr.write(log.text)
    return True


class _captured_stderr:
    """fd 2 into a temporary file for the duration of the block (C++ logs included); .text after it."""

    def __enter__(self):
        self.text = ""
        try:
            sys.stderr.flush()
            self._file = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except (OSError, ValueError, AttributeError):     # no real fd 2 (an embedding host): leave it alone
            self._saved = None
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()


def _cluster_messages_to_stderr(ray) -> Callable[[], None] | None:
    """Ray's driver prints the cluster's error messages (a worker died, a raylet was lost: many lines each)
    on stdout, where they would break a JSON report: send them to stderr, one line each, while the
    executor is open. Returns the undo (None when this Ray has no such hook)."""
    mod = getattr(getattr(ray, "_private", None), "worker", None)
    orig = getattr(mod, "print_to_stdstream", None)
    if orig is None or getattr(orig, "nn_doctor", False):
        return None

    def one_line_on_stderr(data, *args, **kwargs) -> None:
        first = next((str(line).strip() for line in data.get("lines") or () if str(line).strip()), "")
        if first:
            sys.stderr.write(f"ray ({data.get('pid', 'cluster')}): {first}\n")

    one_line_on_stderr.nn_doctor = True  # type: ignore[attr-defined]
    mod.print_to_stdstream = one_line_on_stderr
    return lambda: setattr(mod, "print_to_stdstream", orig)


def _failure(ray, err: BaseException) -> str:
    """One line saying why a probe task failed (not the probe's own error: run_probe records those)."""
    ex = ray.exceptions
    if isinstance(err, getattr(ex, "OutOfMemoryError", ())):
        return "out of memory on the Ray worker (Ray's memory monitor killed it)"
    if isinstance(err, getattr(ex, "RayTaskError", ())):
        cause = getattr(err, "cause", None)
        if cause is not None and not isinstance(cause, getattr(ex, "RayError", ())):
            return f"{type(cause).__name__}: {_line(cause)}"
        return _line(err).removeprefix("ray::")
    dead = tuple(getattr(ex, n) for n in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
                                          "ActorDiedError") if hasattr(ex, n))
    if isinstance(err, dead):
        return f"the Ray worker running it died ({type(err).__name__})"
    lost = tuple(getattr(ex, n) for n in ("ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError")
                 if hasattr(ex, n))
    if isinstance(err, lost):
        return f"its result was lost on the cluster ({type(err).__name__})"
    if isinstance(err, getattr(ex, "RuntimeEnvSetupError", ())):
        return f"the Ray worker's environment could not be set up: {_line(err)}"
    if isinstance(err, getattr(ex, "TaskCancelledError", ())):
        return "cancelled on the cluster"
    return f"{type(err).__name__}: {_line(err)}"


def _cost(task: ProbeTask) -> float:
    """A probe's relative cost, for ordering a round: training steps x batch size (the same model's probes
    cost about that; a probe that diverges stops early, which no estimate knows)."""
    batch = task.settings.batch_size or task.spec.training.batch_size
    return float((task.settings.steps or 0) * (batch or 1))


def longest_first(tasks: list[ProbeTask]) -> list[int]:
    """The order a round's tasks are submitted in: longest first (Ray starts tasks in that order), so that
    the short ones fill the slots at the end instead of one long probe running alone (full-report's first
    round lists its baseline and batch probes before the lr decades: with 600-step lr probes, packed in
    that order on 2 workers it takes 77 s of its local probe times, longest first 64 s). The records
    still come back in the tasks' order."""
    return sorted(range(len(tasks)), key=lambda i: -_cost(tasks[i]))


def _uses_user_code(spec) -> bool:
    return bool(getattr(spec.model, "class_", None) or getattr(spec.training, "step", None))


class _Batch:
    """Tasks sent together: their records (in the tasks' order), the refs still out, and each task's tries."""

    def __init__(self, tasks: list[ProbeTask], label: str | None = None):
        self.tasks, self.label = tasks, label
        self.out: list[ProbeRecord | None] = [None] * len(tasks)
        self.pending: dict[Any, int] = {}
        self.tries = [0] * len(tasks)
        self.code: tuple | None = None


class RayExecutor:
    """Runs each round's probes as Ray tasks; run_round returns the records in the tasks' order."""

    name = "ray"

    def __init__(self, data: DeviceData, clock: BudgetClock | None = None,
                 on_done: Callable[[ProbeTask, ProbeRecord], None] | None = None, *,
                 address: str | None = None, gpus_per_probe: float | None = None, spec_dir: str | None = None):
        ray = _import_ray()
        self.ray = ray
        self.data = data
        self.clock = clock or BudgetClock(None)
        self.on_done = on_done
        self.skipped: list[str] = []
        self.rounds: list[dict[str, Any]] = []
        self._background: list[_Batch] = []
        self.spec_dir = spec_dir
        self.device = str(data.device)
        cuda = data.device.type == "cuda"
        if gpus_per_probe is None:
            gpus_per_probe = 1.0 if cuda else 0.0
        if gpus_per_probe < 0:
            raise UsageError(f"--gpus-per-probe must be >= 0, got {gpus_per_probe:g}")
        if gpus_per_probe > 0 and not cuda:
            raise UsageError(f"--gpus-per-probe {gpus_per_probe:g}: the probes run on {self.device}, not CUDA; "
                             f"drop it or pass --device cuda")
        if cuda and gpus_per_probe == 0:
            raise UsageError("--gpus-per-probe 0 with the probes on CUDA: give each probe a GPU share "
                             "(1, 0.5, 0.25, ...)")
        if gpus_per_probe > 1 and gpus_per_probe != int(gpus_per_probe):
            raise UsageError(f"--gpus-per-probe {gpus_per_probe:g}: above 1 it must be a whole number of GPUs")
        self.gpus = gpus_per_probe
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started = _init_ray(ray, self.address)
        self._undo_messages = _cluster_messages_to_stderr(ray)
        try:
            slots = self._check_resources()
            try:
                self._data = [ray.put(data.arrays)]     # once per command; tasks get it wrapped, unresolved
            except Exception as err:
                raise UsageError(f"the data do not fit in the Ray object store: {_line(err)}") from None
            self._warm_up(slots)
            self._remote = ray.remote(_probe_task).options(num_cpus=1, num_gpus=self.gpus, max_retries=0,
                                                           retry_exceptions=False)
            self._code: tuple | None = None
            self._code_built = False
        except BaseException:
            self.close()
            raise

    # -- setup --
    def _need(self) -> dict[str, float]:
        return {"CPU": 1.0, **({"GPU": self.gpus} if self.gpus else {})}

    def _slots(self) -> int:
        """How many probes the live nodes can run at once (0 also when the cluster does not answer)."""
        need = self._need()
        try:
            nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        except Exception:
            return 0
        return sum(int(min(res.get(k, 0) // v for k, v in need.items())) for res in nodes)

    def _check_resources(self) -> int:
        """A node that can run a probe task exists; returns how many probes the cluster runs at once."""
        slots = self._slots()
        if slots == 0:
            need = self._need()
            have = self.ray.cluster_resources()
            raise UsageError("no node of the Ray cluster has " + " and ".join(f"{v:g} {k}" for k, v in need.items())
                             + " for a probe (the cluster has " + (", ".join(f"{have.get(k, 0):g} {k}" for k in need))
                             + ")" + ("; lower --gpus-per-probe" if self.gpus else ""))
        return slots

    def _warm_up(self, slots: int) -> None:
        """One warm-up task per probe slot (at most WARM_MAX), shaped like a probe: every worker that will
        run probes imports torch and nn-doctor and caches the data now, once, instead of in whichever round
        first lands on it; the answers show the workers run this nn-doctor."""
        ray = self.ray
        n = max(1, min(slots, WARM_MAX))
        warm = ray.remote(_warm_up).options(num_cpus=1, num_gpus=self.gpus, max_retries=0)
        refs = [warm.remote(self._data, self.device) for _ in range(n)]
        ready, rest = ray.wait(refs, num_returns=n, timeout=HANDSHAKE_TIMEOUT_S)
        if not ready:
            self._cancel(refs)
            raise UsageError(f"no Ray worker with {'1 CPU' + (f' and {self.gpus:g} GPU' if self.gpus else '')} free "
                             f"answered within {HANDSHAKE_TIMEOUT_S:.0f} s (NN_DOCTOR_RAY_HANDSHAKE_TIMEOUT_S sets it)")
        try:
            infos = ray.get(ready)
        except Exception as err:
            self._cancel(rest)
            raise UsageError(f"the Ray workers cannot run nn-doctor's probes ({_failure(ray, err)}); install "
                             f"nn-doctor (and torch) in the cluster's Python environment") from None
        from . import __version__
        other = sorted({i.get("nn_doctor") for i in infos} - {__version__})
        if other:
            raise UsageError(f"the Ray workers run nn-doctor {other[0]}, this is {__version__}: install the same "
                             f"version on the cluster")

    def _code_for(self, tasks: list[ProbeTask]) -> tuple | None:
        """The spec folder's code, put once, when a task's spec imports user code (else None)."""
        if not self._code_built and any(self._ships(t.spec) for t in tasks):
            digest, blob = code_bundle(self.spec_dir)
            self._code = (digest, [self.ray.put(blob)], os.path.abspath(self.spec_dir))
            self._code_built = True
        return self._code

    def _ships(self, spec) -> bool:
        """Whether this spec imports user code from the spec's folder (the one shipped)."""
        return bool(self.spec_dir and spec.base_dir and _uses_user_code(spec)
                    and os.path.abspath(spec.base_dir) == os.path.abspath(self.spec_dir))

    # -- one round --
    def _submit(self, task: ProbeTask, code: tuple | None):
        left = self.clock.left()
        deadline = None
        if left is not None:
            task.settings.budget_s = min(task.settings.budget_s or left, left)
            deadline = time.time() + left
        spec_code = code if code is not None and self._ships(task.spec) else None
        return self._remote.remote(self._data, spec_code, task.spec, task.settings, task.overrides, self.device,
                                   deadline, left)

    def _skip(self, task: ProbeTask, why: str) -> ProbeRecord:
        self.skipped.append(f"probe {task.label or task.settings.name}: {why}")
        return skipped_record(task, why)

    def _failed(self, task: ProbeTask, why: str) -> ProbeRecord:
        # named with the skipped work too: the checks that needed this probe have nothing to read
        from .probe import ProbeRecord
        self.skipped.append(f"probe {task.label or task.settings.name}: {why}")
        return ProbeRecord(name=task.settings.name, settings=asdict(task.settings), overrides=dict(task.overrides),
                           stopped="error", error=why, device=self.device)

    def _cancel(self, refs) -> None:
        for ref in list(refs):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:       # already finished, or the cluster is gone: nothing left to stop
                pass

    def run_round(self, tasks: list[ProbeTask], label: str | None = None,
                  background: list[ProbeTask] | None = None) -> list[ProbeRecord]:
        """Run `tasks` side by side and return their records. `background` tasks are sent after them and not
        waited for: they fill the slots this round and the next ones leave idle, and collect_background()
        returns them (the command needs their records only at its end)."""
        batch = _Batch(tasks)
        with RoundTimer(self, label, tasks, batch.out):
            try:
                batch.code = self._code_for(tasks + list(background or []))
                self._send(batch)
                if background:
                    later = _Batch(list(background), label=f"{label or 'round'} (sent in the background)")
                    later.code = batch.code
                    self._send(later)
                    self._background.append(later)
                self._wait(batch)
            except KeyboardInterrupt:
                self._cancel(batch.pending)
                self._cancel_background()
                raise
        return batch.out  # type: ignore[return-value]

    def collect_background(self) -> list[tuple[ProbeTask, ProbeRecord]]:
        """Wait for every background task still out; (task, record) pairs. Their round's timing counts only the
        wait here: what they ran beside other rounds cost those rounds nothing."""
        done: list[tuple[ProbeTask, ProbeRecord]] = []
        while self._background:
            batch = self._background.pop(0)
            with RoundTimer(self, batch.label, batch.tasks, batch.out):
                try:
                    self._wait(batch)
                except KeyboardInterrupt:
                    self._cancel(batch.pending)
                    self._cancel_background()
                    raise
            done.extend(zip(batch.tasks, batch.out))
        return done

    def _cancel_background(self) -> None:
        for batch in getattr(self, "_background", []):
            self._cancel(batch.pending)
        self._background = []

    def _done(self, batch: "_Batch", i: int, rec: ProbeRecord) -> None:
        batch.out[i] = rec
        if self.on_done:
            self.on_done(batch.tasks[i], rec)

    def _send(self, batch: "_Batch") -> None:
        for i in longest_first(batch.tasks):
            task = batch.tasks[i]
            if self.clock.exhausted():
                self._done(batch, i, self._skip(task, "budget exhausted"))
            else:
                batch.tries[i] = 1
                batch.pending[self._submit(task, batch.code)] = i

    def _wait(self, batch: "_Batch") -> None:
        ray, tasks, pending, tries = self.ray, batch.tasks, batch.pending, batch.tries
        last = checked = time.perf_counter()
        budget = self.clock.budget_s
        grace = max(BUDGET_GRACE_S, BUDGET_GRACE_FRACTION * budget) if budget is not None else None
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            if ready and len(pending) > 1:
                more, _ = ray.wait([r for r in pending if r not in ready], num_returns=len(pending) - 1,
                                   timeout=0)
                ready += more
            for ref in ready:
                i = pending.pop(ref)
                task = tasks[i]
                last = time.perf_counter()
                try:
                    rec = ray.get(ref, timeout=STALL_S)
                except Exception as err:
                    why = _failure(ray, err)
                    if tries[i] < ATTEMPTS and not self.clock.exhausted():
                        tries[i] += 1
                        pending[self._submit(task, batch.code)] = i
                        continue
                    retried = " (failed twice on the Ray cluster)" if tries[i] > 1 else \
                        " (on the Ray cluster; not retried: budget exhausted)"
                    self._done(batch, i, self._failed(task, why + retried))
                    continue
                if rec is None:
                    self._done(batch, i, self._skip(task, "budget exhausted"))
                else:
                    rec.device = self.device    # the driver's name for it (a worker calls its GPU cuda:0)
                    self._done(batch, i, rec)
            left = self.clock.left()
            if pending and left is not None and left < -grace:
                self._cancel(pending)
                for i in sorted(pending.values()):
                    self._done(batch, i, self._skip(tasks[i], "budget exhausted (cancelled on the cluster)"))
                pending.clear()
            elif pending and time.perf_counter() - last > STALL_S:
                self._cancel(pending)
                for i in sorted(pending.values()):
                    self._done(batch, i, self._failed(tasks[i], f"no result from the Ray cluster in {STALL_S:.0f} s "
                                                                f"(cancelled)"))
                pending.clear()
            elif pending and time.perf_counter() - checked > HEALTH_EVERY_S:
                checked = time.perf_counter()
                if self._slots() == 0:      # the nodes that could run probes are gone: nothing will start
                    self._cancel(pending)
                    for i in sorted(pending.values()):
                        self._done(batch, i, self._failed(tasks[i], "the Ray cluster has no live node left that "
                                                                    "can run a probe"))
                    pending.clear()

    def close(self) -> None:
        self._cancel_background()
        self._data = None           # drop the references: the object store may free the data
        self._code = None
        if getattr(self, "_started", False):
            self._started = False
            try:
                self.ray.shutdown()
            except Exception:
                pass
        undo, self._undo_messages = getattr(self, "_undo_messages", None), None
        if undo is not None:
            undo()
