"""The Ray executor (--executor ray, issue #8) on a local Ray of 2 CPUs.

- probe-lr, probe-init and full-report give the local JSON (minus timings) for one seed, on a table
  (configs/wine.yaml) and on images (configs/digits_cnn.yaml);
- the data go to the object store once per command;
- a probe task that fails outside run_probe (a worker that dies, user code that raises only on the
  workers) is retried once, then recorded as a failed probe; a command then reports, never crashes;
- the spec's own Python files reach workers that do not have the spec's folder;
- --budget holds (tasks that would start after it are skipped, named in executor.skipped, and the round
  returns), Ctrl-C cancels the outstanding tasks and re-raises;
- an unreachable cluster exits 2 with one line, fast; without Ray, a UsageError naming the extra.

User code that misbehaves only on the workers: a model module written to a temporary folder that compares
os.getpid() with the test process's pid (the workers are other processes).
"""
from __future__ import annotations

import _thread
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402
import yaml  # noqa: E402

from nn_doctor.data import load_dataset, prepare_arrays  # noqa: E402
from nn_doctor.doctor import Options, full_report, probe_init, probe_lr  # noqa: E402
from nn_doctor.errors import UsageError  # noqa: E402
from nn_doctor.executor import BudgetClock, ProbeTask  # noqa: E402
from nn_doctor.probe import DeviceData, ProbeSettings, run_probe  # noqa: E402
from nn_doctor.spec import parse_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
WINE = ROOT / "sample_data" / "wine.csv"
TIMED_FINDINGS = {"R502", "R503"}     # peak memory and ms per step: measurements, not results


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def wine():
    arrays = prepare_arrays(load_dataset(WINE, "label", seed=0))
    return DeviceData(arrays, torch.device("cpu"))


def comparable(report) -> dict:
    """report.to_dict() without what may differ between executors: timings, the executor's name, and the
    messages of findings that state a measured time or memory."""
    d = report.to_dict()
    d.pop("timing", None)
    d["environment"].pop("executor", None)
    for f in d["findings"]:
        if f["code"] in TIMED_FINDINGS:
            f.pop("message")
            f.pop("evidence")
    return d


# ---- same results as local ------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["wine", "digits_cnn"])
@pytest.mark.parametrize("command", [probe_lr, probe_init, full_report], ids=["probe-lr", "probe-init", "full-report"])
def test_ray_gives_the_local_report(command, config):
    # on the CPU: there a probe is bit-for-bit reproducible (cuDNN's kernels are not, even run to run)
    cfg = str(CONFIGS / f"{config}.yaml")
    local = command(Options(config=cfg, device="cpu", quiet=True))
    remote = command(Options(config=cfg, device="cpu", executor="ray", quiet=True))
    assert remote.environment["executor"] == "ray" and local.environment["executor"] == "local"
    a, b = comparable(local), comparable(remote)
    assert b["first_fix"] == a["first_fix"]
    findings = lambda d: [(f["code"], f.get("message")) for f in d["findings"]]  # noqa: E731
    assert findings(b) == findings(a)
    if "lr" in a["probes"]:
        assert b["probes"]["lr"]["recommended"] == a["probes"]["lr"]["recommended"]
        assert [t["status"] for t in b["probes"]["lr"]["tried"]] == [t["status"] for t in a["probes"]["lr"]["tried"]]
    assert b == a


def test_the_data_go_to_the_object_store_once_per_command(monkeypatch):
    from nn_doctor.data import ArrayData
    puts = []
    real_put = ray.put

    def counting_put(value, *args, **kwargs):
        puts.append(type(value).__name__)
        return real_put(value, *args, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    report = probe_lr(Options(config=str(CONFIGS / "wine.yaml"), device="cpu", executor="ray", quiet=True))
    n_probes = len(report.probes["lr"]["tried"])
    assert n_probes >= 5
    assert puts.count(ArrayData.__name__) == 1, puts


# ---- user code that misbehaves on the workers only ---------------------------------------------------

USER_MODEL = '''
"""A user's model for the Ray tests: misbehaves only outside the test process (on the Ray workers)."""
import os
import time

from torch import nn

DRIVER_PID = {pid}
MARKS = {marks!r}
MODE = {mode!r}     # ok | die-once | raise | slow


def on_worker():
    return os.getpid() != DRIVER_PID


class Net(nn.Module):
    def __init__(self, n_in=13, n_out=3):
        super().__init__()
        if on_worker() and MODE == "raise":
            raise RuntimeError("boom on a worker")
        if on_worker() and MODE == "die-once":
            try:
                os.close(os.open(os.path.join(MARKS, "died"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)      # the first worker to get here dies, as a crash or an OOM kill would
        self.net = nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_out))

    def forward(self, x):
        if on_worker() and MODE == "slow":
            time.sleep(0.05)
        return self.net(x)
'''

_counter = iter(range(1000))


def user_spec(tmp_path: Path, mode: str) -> tuple[object, Path, str]:
    """A spec whose model.class is a fresh module (a new name each time: workers outlive a test)."""
    folder = tmp_path / f"user_{mode.replace('-', '_')}_{next(_counter)}"
    marks = tmp_path / "marks"
    folder.mkdir()
    marks.mkdir(exist_ok=True)
    module = f"usermodel_{os.getpid()}_{folder.name}"
    (folder / f"{module}.py").write_text(USER_MODEL.format(pid=os.getpid(), marks=str(marks), mode=mode))
    raw = {"task": "classification", "data": {"path": str(WINE), "target": "label", "normalize": "standardize"},
           "model": {"class": f"{module}:Net"}, "loss": "cross_entropy",
           "optimizer": {"name": "adam", "lr": 0.003}, "training": {"batch_size": 32, "epochs": 5, "seed": 0}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    return parse_spec(raw, folder), folder, str(folder / "spec.yaml")


def tasks_for(spec, n: int, steps: int = 30) -> list[ProbeTask]:
    return [ProbeTask(key=i, spec=spec, settings=ProbeSettings(name=f"p{i}", steps=steps, seed=i, eval_every=10),
                      label=f"p{i}") for i in range(n)]


def executor(data, spec_dir, clock=None, done=None):
    from nn_doctor.ray_executor import RayExecutor
    return RayExecutor(data, clock, done, spec_dir=str(spec_dir))


def counting_submits(ex) -> list:
    """Record the key of every task the executor submits (first tries and retries)."""
    sent = []
    real = ex._submit

    def submit(task, code):
        sent.append(task.key)
        return real(task, code)

    ex._submit = submit
    return sent


def same_training(a, b) -> None:
    assert (a.stopped, a.error, a.losses, a.final_loss, a.final_val_loss, a.metrics) == \
        (b.stopped, b.error, b.losses, b.final_loss, b.final_val_loss, b.metrics)


def test_a_worker_that_dies_is_retried_once_and_the_result_is_the_local_one(tmp_path, wine):
    spec, folder, _ = user_spec(tmp_path, "die-once")
    local = [run_probe(t.spec, wine, t.settings) for t in tasks_for(spec, 3)]
    seen = []
    ex = executor(wine, folder, done=lambda t, r: seen.append(t.key))
    sent = counting_submits(ex)
    try:
        recs = ex.run_round(tasks_for(spec, 3))
    finally:
        ex.close()
    assert (tmp_path / "marks" / "died").exists()           # a worker did die
    assert len(sent) == 4 and len(set(sent)) == 3           # three tasks, one of them sent twice
    assert sorted(seen) == [0, 1, 2]                         # every task reported once
    for rec, ref in zip(recs, local):
        same_training(rec, ref)
    assert ex.skipped == []


def test_a_probe_raising_in_user_code_is_an_error_record_sent_once(tmp_path, wine):
    # the user's model raising (here in its constructor) is a result of the probe (G409), not a worker failure: the probe
    # records it where it ran, and nothing is retried or skipped
    spec, folder, _ = user_spec(tmp_path, "raise")
    ex = executor(wine, folder)
    sent = counting_submits(ex)
    try:
        recs = ex.run_round(tasks_for(spec, 2))
    finally:
        ex.close()
    assert sorted(sent) == [0, 1]
    for rec in recs:
        assert rec.stopped == "error" and rec.error_where == "model build"
        assert "boom on a worker" in rec.error and "\n" not in rec.error
    assert ex.skipped == []


def test_a_command_whose_probes_fail_on_the_workers_still_reports(tmp_path):
    _, _, spec_file = user_spec(tmp_path, "raise")
    report = probe_lr(Options(config=spec_file, device="cpu", executor="ray", steps=20, quiet=True))
    tried = report.probes["lr"]["tried"]
    assert tried and all(t["status"] == "error" for t in tried)
    assert all("boom on a worker" in t["error"] for t in tried)
    assert report.probes["lr"]["recommended"] is None
    assert len(report.skipped) == len(tried) and all("boom on a worker" in s for s in report.skipped)
    assert report.exit_code("never") == 0 and not report.interrupted


def test_user_code_is_shipped_to_workers_that_lack_the_spec_folder(tmp_path, wine):
    spec, folder, _ = user_spec(tmp_path, "ok")
    local = [run_probe(t.spec, wine, t.settings) for t in tasks_for(spec, 2)]
    ex = executor(wine, folder)
    tasks = tasks_for(spec, 2)
    digest = ex._code_for(tasks)[0]                          # the bundle is made from the folder ...
    try:
        shutil.move(str(folder), str(folder) + "_gone")      # ... which the workers then no longer find
        recs = ex.run_round(tasks)
    finally:
        ex.close()
        extracted = Path(tempfile.gettempdir()) / "nn_doctor_code" / digest
        assert extracted.is_dir()                            # the workers imported from their own copy
        shutil.rmtree(extracted, ignore_errors=True)
    for rec, ref in zip(recs, local):
        same_training(rec, ref)


# ---- budget and Ctrl-C -----------------------------------------------------------------------------

def test_the_budget_holds_across_the_cluster(tmp_path, wine):
    spec, folder, _ = user_spec(tmp_path, "slow")      # 0.05 s a step on the workers: 200 steps = 10 s
    budget = 2.0
    ex = executor(wine, folder, clock=BudgetClock(budget))
    t0 = time.perf_counter()
    try:
        recs = ex.run_round(tasks_for(spec, 4, steps=200))
        took = time.perf_counter() - t0
        after = ex.run_round(tasks_for(spec, 2, steps=200))   # the budget is spent: nothing is sent
    finally:
        ex.close()
    assert took < budget + 6.0, took                    # not the 20 s the round would take unbounded
    stopped = [r.stopped for r in recs]
    assert set(stopped) <= {"budget", "skipped"} and "skipped" in stopped, stopped
    assert all(r.steps_run < 200 for r in recs)
    assert [r.stopped for r in after] == ["skipped", "skipped"]
    n_skipped = stopped.count("skipped") + 2
    assert len(ex.skipped) == n_skipped and all("budget exhausted" in s for s in ex.skipped)


def test_ctrl_c_cancels_the_outstanding_tasks_and_reraises(tmp_path, wine, monkeypatch):
    spec, folder, _ = user_spec(tmp_path, "slow")
    cancelled = []
    real_cancel = ray.cancel

    def spy(ref, *args, **kwargs):
        cancelled.append(ref)
        return real_cancel(ref, *args, **kwargs)

    monkeypatch.setattr(ray, "cancel", spy)
    ex = executor(wine, folder)
    timer = threading.Timer(2.0, _thread.interrupt_main)
    t0 = time.perf_counter()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            ex.run_round(tasks_for(spec, 4, steps=400))      # 20 s each, unbounded
        assert time.perf_counter() - t0 < 6.0
        assert len(cancelled) == 4
        # the cancelled probes stop: the workers are free again for the next round
        t1 = time.perf_counter()
        recs = ex.run_round(tasks_for(spec, 2, steps=20))
        assert [r.stopped for r in recs] == ["completed", "completed"]
        assert time.perf_counter() - t1 < 15.0
    finally:
        timer.cancel()
        ex.close()


# ---- usage errors ------------------------------------------------------------------------------------

def test_an_unreachable_cluster_exits_2_with_one_line_fast():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nn_doctor", "probe-lr", "--config", str(CONFIGS / "wine.yaml"),
                           "--executor", "ray", "--ray-address", "127.0.0.1:1", "-q"],
                          capture_output=True, text=True, env=env, timeout=90)
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "127.0.0.1:1" in lines[0] and "Ray cluster" in lines[0]
    assert proc.stdout == ""
    assert took < 30, took


def test_without_ray_the_executor_names_the_extra(monkeypatch, wine):
    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` fails as if it were not installed
    from nn_doctor.ray_executor import RayExecutor
    with pytest.raises(UsageError, match=r"pip install 'nn-doctor\[ray\]'"):
        RayExecutor(wine)
    with pytest.raises(UsageError, match=r"--executor ray needs Ray"):
        probe_lr(Options(config=str(CONFIGS / "wine.yaml"), executor="ray", quiet=True))


def test_gpu_shares_need_probes_on_cuda(wine):
    from nn_doctor.ray_executor import RayExecutor
    with pytest.raises(UsageError, match="--gpus-per-probe 0.5"):
        RayExecutor(wine, gpus_per_probe=0.5)


def test_the_base_install_does_not_import_ray():
    code = ("import sys, nn_doctor.cli, nn_doctor.doctor, nn_doctor.executor, nn_doctor.probe; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_failure_messages_are_one_line():
    from nn_doctor.ray_executor import _failure
    oom = _failure(ray, ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.\n"
                                                          "Memory on the node was 7.5GB / 8GB"))
    assert oom.startswith("out of memory") and "\n" not in oom
    died = _failure(ray, ray.exceptions.WorkerCrashedError())
    assert "died" in died and "\n" not in died
