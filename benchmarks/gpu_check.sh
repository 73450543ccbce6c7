#!/usr/bin/env bash
# The CUDA path, run for real on a GPU machine (not in CI): probes on the device, the out-of-memory
# handling of step 5, the GPU figures of bench_probe, and the test suite with device auto -> cuda.
# Usage: bash benchmarks/gpu_check.sh OUTDIR
set -u
out=${1:-/tmp/gpu_check}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
echo "== full-report, conv net on digits, CUDA"
/usr/bin/time -f "wall %e s" python3 -m nn_doctor full-report --config configs/digits_cnn.yaml --device cuda --quiet --format json --output "$out/digits_cnn_cuda.json" > /dev/null; echo "exit $?"
python3 -c "import json,sys; r=json.load(open('$out/digits_cnn_cuda.json')); print(r['environment']); print('verdict', r['verdict'], 'first_fix', r['first_fix']); [print(' ', f['code'], f['severity'], f['message'][:150]) for f in r['findings']]"
echo "== full-report, a batch that cannot fit: R501 expected"
/usr/bin/time -f "wall %e s" python3 -m nn_doctor full-report --config benchmarks/specs/oom_digits.yaml --quiet --format json --output "$out/oom.json" > /dev/null; echo "exit $?"
python3 -c "import json; r=json.load(open('$out/oom.json')); [print(' ', f['code'], f['severity'], f['message'][:200]) for f in r['findings'] if f['code'][0] in 'RH']"
echo "== bench_probe on CUDA"
python3 benchmarks/bench_probe.py --device cuda 2>&1 | tail -40
echo "== tests, device auto -> cuda"
timeout 300 python3 -m pytest -q -x tests/test_full_report.py tests/test_probe_commands.py -p no:cacheprovider 2>&1 | tail -15
echo "== transformers on CUDA: bf16 and real fp16 autocast with GradScaler; fp16 overflow without loss scaling"
timeout 400 python3 -m pytest -q -x tests/test_transformers.py -p no:cacheprovider -k "fp16 or padding or accumulation" 2>&1 | tail -5
python3 - <<'PY'
import torch
from nn_doctor.spec import load_spec
from nn_doctor.data import load_from_spec, prepare_arrays
from nn_doctor.probe import DeviceData, ProbeSettings, run_probe
from nn_doctor.lr_search import classify
spec = load_spec("configs/sentiment_transformer.yaml").with_overrides(**{"training.device": "cuda"})
dd = DeviceData(prepare_arrays(load_from_spec(spec)), torch.device("cuda"))
for prec, scaler in (("fp32", None), ("bf16", None), ("fp16", None), ("fp16", False)):
    sp = spec.with_overrides(**{"training.precision": prec, "training.grad_scaler": scaler})
    r = run_probe(sp, dd, ProbeSettings(steps=150))
    print(prec, "scaler" if sp.training.loss_scaling else "no-scaler", classify(r), r.stopped, r.final_loss, r.amp)
# a real fp16 overflow on CUDA: one feature in raw units (x 2e5) on wine, no loss scaling, then bf16
import pandas as pd, tempfile, os, yaml
df = pd.read_csv("sample_data/wine.csv"); f = [c for c in df.columns if c != "label"]
df[f] = (df[f] - df[f].mean()) / df[f].std(); df["proline"] *= 2e5
d = tempfile.mkdtemp(); df.to_csv(os.path.join(d, "w.csv"), index=False)
for prec, scaler in (("fp16", False), ("fp16", True), ("bf16", None)):
    y = {"task": "classification", "data": {"path": os.path.join(d, "w.csv"), "target": "label"},
         "model": {"layers": [{"type": "linear", "out": 32}, {"type": "relu"}, {"type": "linear", "out": 3}]},
         "loss": "cross_entropy", "training": {"precision": prec, "grad_scaler": scaler, "device": "cuda"}}
    open(os.path.join(d, "s.yaml"), "w").write(yaml.safe_dump(y))
    sp = load_spec(os.path.join(d, "s.yaml"))
    r = run_probe(sp, DeviceData(prepare_arrays(load_from_spec(sp)), torch.device("cuda")), ProbeSettings(steps=100))
    print("wine raw", prec, scaler, classify(r), r.stopped, r.amp)
PY
python3 benchmarks/bench_transformer.py --device cuda --repeat 3 2>&1 | tail -6
