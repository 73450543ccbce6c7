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
