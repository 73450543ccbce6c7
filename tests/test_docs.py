"""The user docs ship with the repository and stay true: docs/findings.md is the catalogue, docs/spec.md
names every spec key, docs/report.md every key of the JSON report, and nothing the package prints cites
internal notes, quotes them untranslated, or points at files outside the repository."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from nn_doctor import catalogue
from nn_doctor.cli import app
from nn_doctor.errors import UsageError
from nn_doctor.spec import Spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
INTERNAL = re.compile(r"shared/|seeds/|seeds'|\bseeds \d|config\.md|report\.md|style-anchors")
COMMANDS = ["check-data", "probe-lr", "probe-init", "full-report", "check-curves", "explain"]


def _internal_refs(text: str) -> list[str]:
    return [m.group(0) for m in CJK.finditer(text)] + [m.group(0) for m in INTERNAL.finditer(text)]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- docs/findings.md ------------------------------------------------------------------------------

def test_findings_md_is_generated_from_the_catalogue():
    gen = _load_script("gen_findings_md")
    current = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert current == gen.render(), "docs/findings.md is out of date: run python scripts/gen_findings_md.py"
    for code, entry in catalogue.CATALOGUE.items():
        assert f"### {code}" in current and entry.name in current


def test_findings_md_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch):
    gen = _load_script("gen_findings_md")
    stale = tmp_path / "findings.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(gen, "OUT", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0


# ---- docs/spec.md ------------------------------------------------------------------------------------

def _keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in cls.model_fields.items():
        if field.exclude or cls.__name__ == "InitSpec":   # excluded fields are bookkeeping, not YAML keys
            continue
        key = field.alias or name
        out.append(prefix + key)
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                if t.__name__ not in ("LayerSpec", "InitSpec"):   # free-form mappings: documented as prose
                    out += _keys(t, prefix + key + ".")
                break
            stack.extend(typing.get_args(t))
    return out


def test_spec_md_documents_every_key():
    text = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    keys = _keys(Spec)
    assert "data.normalize" in keys and "training.step" in keys and "model.class" in keys
    missing = []
    for dotted in keys:
        section, _, leaf = dotted.rpartition(".")
        if not section:
            if f"## `{leaf}`" not in text:   # each top-level key has its own section
                missing.append(dotted)
        elif f"## `{section}`" not in text or f"| `{leaf}` |" not in text:
            missing.append(dotted)
    assert not missing, f"docs/spec.md does not document: {missing}"


def test_spec_md_examples_are_valid_specs():
    import yaml
    text = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    full = [b for b in blocks if "model:" in b]
    assert len(full) >= 2
    for b in full:
        parse_spec(yaml.safe_load(b))


# ---- messages --------------------------------------------------------------------------------------

BASE = {"model": {"layers": [{"type": "linear", "out": 3}]}, "loss": "cross_entropy"}


@pytest.mark.parametrize("raw, expected", [
    ({**BASE, "data": {"normalise": "standardize"}}, "did you mean data.normalize?"),
    ({**BASE, "optimiser": {"lr": 0.1}}, "did you mean optimizer?"),
    ({**BASE, "training": {"batchsize": 8}}, "did you mean training.batch_size?"),
    ({**BASE, "loss": {"name": "mse", "class_weight": "balanced"}}, "did you mean loss.class_weights?"),
    ({"model": {"clas": "m:Net"}, "loss": "mse"}, "did you mean model.class?"),
])
def test_unknown_spec_key_suggests_the_closest(raw, expected):
    with pytest.raises(UsageError) as err:
        parse_spec(raw)
    assert expected in str(err.value)
    assert "docs/spec.md" in str(err.value)


def test_unknown_spec_key_without_a_near_key_has_no_guess():
    with pytest.raises(UsageError) as err:
        parse_spec({**BASE, "data": {"zzzz": 1}})
    assert "did you mean" not in str(err.value) and "data.zzzz: unknown key" in str(err.value)


def test_explain_and_help_are_english_and_self_contained():
    runner = CliRunner()
    texts = {}
    for code in catalogue.CATALOGUE:
        texts[f"explain {code}"] = runner.invoke(app, ["explain", code]).output
    texts["explain --all --format json"] = runner.invoke(app, ["explain", "--all", "--format", "json"]).output
    texts["--help"] = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    for cmd in COMMANDS:
        texts[f"{cmd} --help"] = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"}).output
    assert all(texts.values())
    bad = {k: _internal_refs(v) for k, v in texts.items() if _internal_refs(v)}
    assert not bad, bad


def test_help_flags_show_no_type():
    out = CliRunner().invoke(app, ["full-report", "--help"], env={"COLUMNS": "200"}).output
    assert "--quiet" in out and "--verbose" in out
    assert "<bool>" not in out
    assert "<float>" in out   # typed options keep their type


def _user_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (docstrings and comments are for developers)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_string_the_package_can_print_cites_internal_notes():
    bad = []
    for path in sorted((ROOT / "nn_doctor").rglob("*.py")):
        for line, s in _user_strings(path):
            if _internal_refs(s):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {s[:80]!r}")
    assert not bad, "\n".join(bad)


def test_readme_links_the_docs_and_nothing_outside_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/spec.md" in readme and "docs/findings.md" in readme
    assert "../shared" not in readme and "seeds/" not in readme
    assert not CJK.search(readme)
    for rel in re.findall(r"\]\(((?:docs|configs|benchmarks|scripts)/[^)#\s]+)", readme):
        assert (ROOT / rel).exists(), rel


def test_check_data_takes_data_like_the_other_commands():
    runner = CliRunner()
    res = runner.invoke(app, ["check-data", "--data", str(ROOT / "sample_data" / "wine.csv"), "--target", "label",
                              "--quiet"])
    assert res.exit_code == 1, res.output     # wine's unscaled proline is an error (D104)
    assert "D104" in res.output
    res = runner.invoke(app, ["check-data", "a.csv", "--data", "b.csv"])
    assert res.exit_code == 2


# ---- the CI job ------------------------------------------------------------------------------------

def test_github_actions_job_runs_full_report_and_keeps_the_reports():
    import yaml
    wf = yaml.safe_load((ROOT / "docs" / "ci" / "github-actions.yml").read_text(encoding="utf-8"))
    job = wf["jobs"]["nn-doctor"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pip install nn-doctor" not in runs and 'pip install "$NN_DOCTOR_SOURCE"' in runs
    assert job["env"]["NN_DOCTOR_SOURCE"] == "."              # as shipped it works in this repository
    assert (ROOT / job["env"]["NN_DOCTOR_SPEC"]).exists()
    full = next(s["run"] for s in job["steps"] if "full-report" in s.get("run", ""))
    assert "--junit-xml nn-doctor-report/junit.xml" in full and "--html nn-doctor-report/report.html" in full
    keep = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert keep["if"] == "always()" and keep["with"]["path"] == "nn-doctor-report/"
    # every option the job passes exists
    help_text = CliRunner().invoke(app, ["full-report", "--help"], env={"COLUMNS": "200"}).output
    missing = {o for o in re.findall(r"(--[a-z][a-z-]+)", full) if o not in help_text}
    assert not missing, missing


def test_ci_shell_variant_is_posix_sh_and_documents_its_settings():
    script = (ROOT / "docs" / "ci" / "run-nn-doctor.sh").read_text(encoding="utf-8")
    assert script.startswith("#!/bin/sh\n")
    for var in ("NN_DOCTOR_SPEC", "NN_DOCTOR_SOURCE", "NN_DOCTOR_OUT", "NN_DOCTOR_BUDGET", "NN_DOCTOR_FAIL_ON"):
        assert f"#   {var}" in script
    res = subprocess.run(["sh", "-n", str(ROOT / "docs" / "ci" / "run-nn-doctor.sh")], capture_output=True)
    assert res.returncode == 0, res.stderr


# ---- docs/report.md ----------------------------------------------------------------------------------

def _code_names(text: str) -> set[str]:
    """Everything written as inline code (`key`) on a page; fenced blocks (examples) do not count."""
    return set(re.findall(r"`([^`\s]+)`", re.sub(r"```.*?```", "", text, flags=re.S)))


def _undocumented(keys, text: str) -> list[str]:
    names = _code_names(text)
    return sorted({str(k) for k in keys} - names)


@pytest.fixture(scope="module")
def command_json(one_thread):
    """The JSON of real, fast commands: check-data (no training), probe-lr (short probes), check-curves."""
    runner = CliRunner()
    runs = {
        "check-data": ["check-data", str(ROOT / "sample_data" / "wine.csv"), "--target", "label"],
        "probe-lr": ["probe-lr", "--config", str(ROOT / "configs" / "wine.yaml"), "--steps", "20", "--budget", "20"],
        "check-curves": ["check-curves", str(ROOT / "configs" / "logs" / "wine_noisy_labels.csv")],
    }
    out = {}
    for name, args in runs.items():
        res = runner.invoke(app, [*args, "--format", "json", "--quiet"])
        assert res.exit_code in (0, 1), (name, res.output)
        out[name] = json.loads(res.stdout)
    return out


def _keys_of(d: dict) -> dict[str, set[str]]:
    """Where each JSON key of a report lives -> the keys found there."""
    found: dict[str, set[str]] = {"top level": set(d), "inputs": set(d["inputs"]),
                                  "environment": set(d["environment"]), "steps": set(), "findings": set(),
                                  "verified": set(), "probes": set(d["probes"]), "timing": set(d["timing"]),
                                  "timing.rounds": set()}
    for s in d["steps"]:
        found["steps"] |= set(s)
    for f in d["findings"]:
        found["findings"] |= set(f)
        found["verified"] |= set(f.get("verified") or {})
    for r in d["timing"].get("rounds", []):
        found["timing.rounds"] |= set(r)
    lr = d["probes"].get("lr")
    if lr:
        found["probes.lr"] = set(lr)
        found["probes.lr.tried"] = {k for t in lr["tried"] for k in t}
    return found


def test_report_md_documents_every_key_the_commands_write(command_json):
    from types import SimpleNamespace
    from nn_doctor.catalogue import Severity, Step
    from nn_doctor.lr_search import LrStatus
    from nn_doctor.render import _STATUS_GLYPHS
    from nn_doctor.report import Finding, Report
    from nn_doctor.treatment import _final_state, _path_step, judge

    text = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    assert _undocumented({"no_such_key", "code"}, text) == ["no_such_key"]   # the check can fail

    # the optional keys, set on a report built here (no command run needs to hit them)
    rep = Report("full-report", inputs={"config": "c.yaml"}, notes=["a note"], skipped=["probe lr 0.1: budget exhausted"],
                 interrupted=True)
    found = rep.add(Finding("D104", "m", "set data.normalize: standardize", patch={"data.normalize": "standardize"},
                            explained_by=["D100"]))
    res = rep.step(Step.DATA)
    res.summary, res.reason, res.not_run["D105"] = "s", "r", "why"
    # what a fix's probe writes into `verified`: one that helped, one whose probe broke
    rec = dict(error=None, metrics={"balanced_accuracy": 0.5}, final_val_loss=1.0, final_loss=1.0, steps_run=150)
    good = SimpleNamespace(**{**rec, "stopped": "completed", "metrics": {"balanced_accuracy": 0.9}, "final_val_loss": 0.2})
    broke = SimpleNamespace(**{**rec, "stopped": "diverged"})
    found.verified = judge(SimpleNamespace(**rec, stopped="completed"), broke, found.patch)
    made = rep.to_dict()
    where = {k: set(v) for k, v in _keys_of(made).items()}
    where["verified"] |= set(judge(broke, good, found.patch))
    # the treatment block: a step of its path and its final state
    step = _path_step(found)
    where["probes.treatment"] = {"path", "written_without_probe", "stopped", "final"}
    where["probes.treatment.path"] = set(step) | {"round_s"}
    where["probes.treatment.final"] = set(_final_state(None, [{**step, "rediagnosed": False}]))

    for name, d in command_json.items():
        assert d["command"] == name
        for place, keys in _keys_of(d).items():
            where.setdefault(place, set()).update(keys)
    assert {"lr", "curves"} <= where["probes"] and "fix_status" in where["findings"]
    missing = {place: _undocumented(keys, text) for place, keys in where.items() if _undocumented(keys, text)}
    assert not missing, f"docs/report.md does not mention these JSON keys: {missing}"

    values = {"verdict": ["healthy", "warnings", "unhealthy", "incomplete", "not diagnosed again"],
              "fix_status": ["confirmed", "not confirmed", "untested"],
              "step status": list(_STATUS_GLYPHS), "severity": [s.value for s in Severity],
              "lr status": [s.value for s in LrStatus], "command": COMMANDS[:-1]}
    missing = {k: [v for v in vs if f"`{v}`" not in text] for k, vs in values.items()}
    assert not any(missing.values()), f"docs/report.md does not name these values: {missing}"
    for code in ("0", "1", "2", "130"):
        assert f"| {code} |" in text, f"exit code {code} is not in the exit-code table"
    assert "--fail-on" in text and "schema_version" in text
    # the page describes the schema version the reports carry
    assert re.search(rf"\| `schema_version` \|[^\n]*`{made['schema_version']}`", text)
    assert [m for m in _internal_refs(text) if m != "report.md"] == []
