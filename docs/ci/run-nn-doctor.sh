#!/bin/sh
# nn-doctor's full report for any CI system (or a terminal): installs nn-doctor, runs full-report and
# keeps what a person looks at afterwards in one folder.
#
#   NN_DOCTOR_SPEC=spec.yaml sh docs/ci/run-nn-doctor.sh
#
# Settings (environment variables, all optional):
#   NN_DOCTOR_SPEC     the YAML spec (default: nn-doctor's bundled example, unhealthy on purpose: exit 1)
#   NN_DOCTOR_SOURCE   what `pip install` gets nn-doctor from: a path to its repository (default: the
#                      repository this script is in) or a pip URL such as
#                      git+https://github.com/OWNER/nn-doctor.git (nn-doctor is not on a package index);
#                      "none" skips the install when nn-doctor is already installed
#   NN_DOCTOR_OUT      the folder for the artifacts (default: nn-doctor-report)
#   NN_DOCTOR_BUDGET   seconds for the whole report (default: 300)
#   NN_DOCTOR_FAIL_ON  error | warning | never (default: error)
#   PYTHON             the Python to install into and run with (default: python3)
# torch must be installed already (the CPU build: pip install torch --index-url
# https://download.pytorch.org/whl/cpu).
#
# Writes $NN_DOCTOR_OUT/junit.xml (one test case per check; findings at or above the fail-on severity
# are failures, checks that could not run are skipped), report.md (also printed on stdout, e.g. for
# $GITHUB_STEP_SUMMARY) and report.html. Exits with nn-doctor's exit code: 0 no finding at or above
# NN_DOCTOR_FAIL_ON, 1 some, 2 unusable input (one line on stderr).
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
src=${NN_DOCTOR_SOURCE:-$repo}
out=${NN_DOCTOR_OUT:-nn-doctor-report}

if [ "$src" != none ]; then
    "$py" -m pip install --quiet "$src"
fi
mkdir -p "$out"

set -- --quiet --budget "${NN_DOCTOR_BUDGET:-300}" --fail-on "${NN_DOCTOR_FAIL_ON:-error}" \
    --junit-xml "$out/junit.xml" --format markdown --output "$out/report.md"
if [ -n "${NN_DOCTOR_SPEC:-}" ]; then
    set -- --config "$NN_DOCTOR_SPEC" "$@"
fi
# an nn-doctor without the HTML report (--html) still writes the JUnit and Markdown reports
if "$py" -m nn_doctor full-report --help | grep -q -e "--html"; then
    set -- "$@" --html "$out/report.html"
fi

status=0
"$py" -m nn_doctor full-report "$@" || status=$?
echo "nn-doctor: exit code $status; reports in $out/" >&2
exit "$status"
