"""The probe plan: which probes each command runs, in rounds of independent probes an executor can run side
by side, and what their records feed in the check context. Probes only measure; the checks judge.
"""
from __future__ import annotations

from typing import Any

from .catalogue import Step
from .checks import run_checks
from .errors import ModelBuildError
from .series import smoothed_curve
from .session import Session, configured_steps, steps_per_epoch
from .spec import Spec

# ---- probe lengths and plans (each a named constant; the budget can only shorten them) --------
LR_PROBE_STEPS = 150          # steps per lr probe: long enough for the smoothed curve to show its trend on small data
BASELINE_MAX_STEPS = 300      # the train/validation probe: the configured epochs, capped here
BASELINE_MIN_STEPS = 100      # ... and at least this many, so curves have a shape
VAL_POINTS = 12               # validation evaluations along the baseline probe
BATCH_FACTORS = (0.25, 4.0)   # batch-size probe: configured / 4 and x 4 (seeds/003: try smaller batches)
BATCH_SAMPLES_EPOCHS = 10     # batch probes see the same number of samples: ~10 passes over the data,
BATCH_SAMPLES_STEPS = 150     # ... or 150 steps at the configured batch, whichever is less (the cost stays bounded)
SUBSET_ROWS = 256             # M208: the small training subset the model must be able to fit
SUBSET_STEPS = 300
TINY_ROWS = 10                # G407: seeds/000 Q2 "使用小规模数据测试训练流程(如仅10条样本)"
TINY_STEPS = 800              # a cap: the probe stops once its 10 rows are clearly memorised (TINY_FITTED). At 200
                              # steps, slow but converging nets (a 2-unit digits bottleneck, a linear stack on XOR)
                              # were still falling fast and read as "cannot overfit" on some seeds; a 1-unit net on
                              # wine that truly cannot is still falling at 200 (0.43) and plateaus by 800 (0.23)
TINY_FITTED = 0.5             # ... "clearly memorised": at half G407's near-zero levels, so the final full-batch
                              # loss, read in eval mode, lands below them
INIT_VARIANTS = ("default", "he", "xavier", "lecun", "orthogonal")
PROBE_HEALTH_CODES = ["G400", "G409"]   # every probe command reports a non-finite or crashed probe


def probe_forward(spec: Spec, sample_shape: tuple[int, ...], seed: int):
    """Build the spec's model and run a second forward pass on zeros of the data's shape (a user forward may fail
    or exit only then); return (model, output). Raises ModelBuildError."""
    import torch
    from .model import build_model
    torch.manual_seed(seed)
    model = build_model(spec.model, sample_shape, spec.base_dir)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros((2,) + tuple(sample_shape)))
    except KeyboardInterrupt:
        raise
    except BaseException as e:   # a user forward that fails (or exits) only on its second call
        from .model import user_error, user_frame
        raise ModelBuildError(f"model: a second forward pass fails: {user_error(e, spec.base_dir)}",
                              layer="model.class", evidence={"where": user_frame(e, spec.base_dir)}) from None
    if not isinstance(out, torch.Tensor):   # the first forward returned a tensor, this one did not
        raise ModelBuildError(f"model: a second forward pass returns {type(out).__name__}; it must return one "
                              f"tensor every time", layer="model.class")
    return model, out


OUTPUT_RANGE_ROWS = 256   # real training rows the built model's outputs are measured on (M202 for user classes)


def _output_range(model, s: Session) -> tuple[float, float] | None:
    """min and max of the model's outputs at init on the first training rows (the activation a user's forward
    ends in shows there: a sigmoid or softmax keeps every output inside (0, 1))."""
    import torch
    try:
        with torch.no_grad():
            X = s.data.view(s.spec.data.normalize, False)[0]   # the rows as the probes feed them (scaled)
            out = model.eval()(X[:OUTPUT_RANGE_ROWS].cpu())
        if not isinstance(out, torch.Tensor) or not bool(torch.isfinite(out).all()):
            return None
        return float(out.min()), float(out.max())
    except KeyboardInterrupt:
        raise
    except BaseException:   # the probes will meet (and report) whatever breaks here, sys.exit in a forward too
        return None


AFFINE_PAIRS = 128   # row pairs the affinity test averages over (M208: a network with no nonlinearity)


def _affine_error(model, s: Session) -> float | None:
    """How far the model at init is from an affine map, on real (scaled) training rows a, b:
    mean |f((a+b)/2) - (f(a)+f(b))/2| / mean |(f(a)-f(b))/2|. An affine stack gives float32 rounding (~1e-7);
    any activation between the layers gives orders more. None when the outputs do not vary (nothing to compare)."""
    import torch
    try:
        X = s.data.view(s.spec.data.normalize, False)[0].cpu()
        n = min(AFFINE_PAIRS, len(X) // 2)
        if n < 2:
            return None
        a, b = X[:n].double(), X[n:2 * n].double()
        with torch.no_grad():
            m = model.eval().double()
            fa, fb, fm = m(a), m(b), m((a + b) / 2)
        spread = ((fa - fb) / 2).abs().mean()
        if not bool(torch.isfinite(spread)) or float(spread) <= 1e-9:
            return None
        return float((fm - (fa + fb) / 2).abs().mean() / spread)
    except KeyboardInterrupt:
        raise
    except BaseException:   # the probes will meet (and report) whatever breaks here, sys.exit in a forward too
        return None
    finally:
        model.float()


def model_builds(s: Session) -> bool:
    """Build once before any probe: a spec that cannot build is M200 (reported in step 2)."""
    from .model import count_parameters, model_summary
    s.ctx.model_summary = model_summary(s.spec.model)
    try:
        model, out = probe_forward(s.spec, s.arrays.sample_shape, s.seed)
        s.ctx.n_params = count_parameters(model)
        s.ctx.output_range = _output_range(model, s)
        s.ctx.affine_error = _affine_error(model, s)
        s.ctx.n_outputs = int(out.shape[-1]) if out.dim() > 1 else 1
        return True
    except ModelBuildError as err:
        s.ctx.build_error = err
        s.report.step(Step.MODEL).ran = True
        run_checks(["M200"], s.ctx, s.report, [], [])
        for st in (Step.HYPERPARAMETERS, Step.GRADIENTS):
            s.report.skip_step(st, "the model does not build (M200)")
        return False


def init_variants(s: Session, steps: int | None = None) -> dict[str, Any]:
    from . import lr_search as L
    spec = s.spec
    configured = str(spec.model.init)
    names = [configured] + [v for v in INIT_VARIANTS if v != configured]
    tasks = []
    for name in names:
        init = spec.model.init if name == configured else name
        tasks.append(s.task(name, spec.with_overrides(**{"model.init": init}), f"init {name}", {"model.init": name},
                            steps=steps or s.opts.steps or LR_PROBE_STEPS, eval_every=0, record_every=0))
    records = {t.key: r for t, r in zip(tasks, s.run_round(tasks, "init probes")) if r.stopped != "skipped"}
    s.ctx.init_variants = records
    if configured in records:
        s.ctx.init = records[configured]
        # the configured init at the configured lr is a probe of the configured lr: H300 judges it here too
        lr = spec.optimizer.lr
        s.ctx.lr_records = {lr: records[configured]}
        s.ctx.lr = L.decide(s.ctx.lr_records, [lr], lr)
    variants = []
    for name, rec in records.items():
        layers = [{"layer": layer, "act_std": st.get("act_std"), "grad_norm": st.get("grad_norm")}
                  for layer, st in rec.init_layers.items() if rec.layer_kinds.get(layer) in ("linear", "conv", "recurrent")]
        variants.append({"init": name, "configured": name == configured, "status": L.classify(rec),
                         "initial_loss": rec.initial_loss, "final_loss": rec.final_loss, "layers": layers,
                         "curve": smoothed_curve(rec)})
    ok = [v for v in variants if v["final_loss"] is not None and v["status"] != "diverged"]
    best = min(ok, key=lambda v: v["final_loss"]) if ok else None
    conf = next((v for v in variants if v["configured"]), None)
    out = {"variants": variants, "best": best["init"] if best else None, "configured": configured,
           "lr": spec.optimizer.lr, "steps_per_probe": steps or s.opts.steps or LR_PROBE_STEPS}
    if best and conf:
        if conf["final_loss"] is None:
            out["comparison"] = f"{best['init']} trains to loss {best['final_loss']:.3g}; the configured init {configured} diverged"
        elif best["init"] != configured:
            out["comparison"] = (f"{best['init']} trains to loss {best['final_loss']:.3g} vs {conf['final_loss']:.3g} "
                                 f"with the configured {configured} ({conf['final_loss'] / max(best['final_loss'], 1e-12):.1f}x lower)")
        else:
            out["comparison"] = f"the configured init {configured} trains best (loss {conf['final_loss']:.3g})"
    s.report.probes["init"] = out
    return out


def run_probes(s: Session) -> None:
    """Every probe the enabled checks need (checks.PROBES_NEEDED), in rounds of independent probes."""
    from . import lr_search as L
    from .checks import probes_needed
    spec, ctx, arrays = s.spec, s.ctx, s.arrays
    need = probes_needed(s.select, s.ignore)
    n = len(arrays.X)
    spe = steps_per_epoch(spec, n)
    base_steps = int(min(BASELINE_MAX_STEPS, max(BASELINE_MIN_STEPS, spec.training.epochs * spe)))
    eval_every = max(1, base_steps // VAL_POINTS)
    bs = min(spec.training.batch_size, n)

    # The baseline (configured spec: curves, gradients, init stats) and the probes that depend on nothing
    # else: batch sizes, regularisation, optimizer comparison. They run in the lr decades' round.
    r1 = [s.task("baseline", spec, "baseline (configured spec)", steps=base_steps, eval_every=eval_every,
                 record_every=max(1, base_steps // 10))] if "baseline" in need else []
    short = judged_steps(spec, n)
    if "baseline" in need and short < base_steps:   # the baseline runs longer than the user's training: that
        # training is run as well, as configured (H308 compares the two; fixes are judged against it)
        r1.append(s.task("as configured", spec, f"configured length ({short} steps)", steps=short,
                         eval_every=max(1, short // 4), record_every=0, instrument=False))
    samples = min(BATCH_SAMPLES_EPOCHS * n, BATCH_SAMPLES_STEPS * bs)
    for factor in ((1.0,) + BATCH_FACTORS) if "batch" in need else ():
        b = int(max(8, min(n, round(bs * factor))))
        if factor != 1.0 and b == bs:
            continue
        steps = int(max(20, round(samples / b)))
        r1.append(s.task(("batch", b), spec.with_overrides(**{"training.batch_size": b}), f"batch {b}",
                         {"training.batch_size": b}, steps=steps, batch_size=b, eval_every=max(1, steps // 5),
                         record_every=0, instrument=False))
    weaker = weaker_regularization(spec) if "regularization" in need else None
    if weaker:
        r1.append(s.task(("reg", "weaker"), spec.with_overrides(**weaker), "weaker regularisation", weaker,
                         steps=base_steps, eval_every=eval_every, record_every=0, instrument=False))
    if spec.optimizer.name == "sgd" and "optimizer" in need:
        adam = {"optimizer.name": "adam", "optimizer.lr": 1e-3, "optimizer.momentum": 0.0}
        r1.append(s.task(("opt", "adam"), spec.with_overrides(**adam), "optimizer adam", adam,
                         steps=base_steps, eval_every=eval_every, record_every=0, instrument=False))
    if "extra" in need:   # warmup, bf16 / loss scaling, norm-bias decay counterfactuals (transformer_probes.py)
        from .transformer_probes import extra_tasks
        r1 += extra_tasks(s, base_steps, eval_every)

    def keep(t, rec) -> None:
        if rec.stopped == "skipped":
            return
        if t.key[0] == "extra":
            ctx.extra[t.key[1]] = rec
        elif t.key == "as configured":
            ctx.as_configured = rec
        elif t.key == "baseline":
            ctx.baseline = ctx.init = rec
            ctx.regularization["configured"] = rec
            ctx.optimizers["configured"] = rec
        elif t.key[0] == "batch":
            ctx.batch[t.key[1]] = rec
        elif t.key[0] == "reg":
            ctx.regularization["weaker"] = rec
        elif t.key[0] == "opt":
            ctx.optimizers["adam"] = rec

    # The capacity and tiny-batch tests run at a working lr: the recommendation, else the configured lr.
    def capacity_tasks(lr: float) -> list:
        working = spec.with_overrides(**{"optimizer.lr": lr})
        tasks = []
        if "subset" in need:
            tasks.append(s.task("subset", working, f"fit {min(SUBSET_ROWS, n)} rows", {"optimizer.lr": lr},
                                steps=SUBSET_STEPS, subset=SUBSET_ROWS, eval_every=0, record_every=0, instrument=False))
        if "tiny" in need:
            tasks.append(s.task("tiny", no_dropout(working), f"overfit {TINY_ROWS} rows", {"optimizer.lr": lr},
                                **tiny_settings()))
        return tasks

    capacity_lr: list[float] = []   # the lr the capacity and tiny-batch probes ran at, when they ran beside the lr search

    def keep_all(t, rec) -> None:
        if t.key in ("subset", "tiny"):
            if rec.stopped != "skipped":
                setattr(ctx, "subset_fit" if t.key == "subset" else "tiny", rec)
        else:
            keep(t, rec)

    def beside_recommendation(lr: float) -> list:
        capacity_lr.append(lr)
        return capacity_tasks(lr)

    # Rounds 1-3: the lr search. The probes above depend on nothing and nothing in the search depends on them:
    # they are sent with its decades in the background, to run in whatever slots the search leaves idle. The
    # capacity and tiny-batch probes run in the round that probes the recommended lr, when there is one.
    if "lr" in need:
        lr = L.run_search(s, alongside=r1, on_alongside=keep_all, beside_recommendation=beside_recommendation)
    else:
        lr = None
        for t, rec in zip(r1, s.run_round(r1, "probes: baseline, batch sizes, regularisation")):
            keep(t, rec)
    ctx.working_lr = (lr.recommended if lr is not None else None) or spec.optimizer.lr
    if not (capacity_lr and capacity_lr[-1] == ctx.working_lr):
        # no recommendation round, or the recommendation failed its probe: their own round
        ctx.subset_fit = ctx.tiny = None
        r5 = capacity_tasks(ctx.working_lr)
        for t, rec in zip(r5, s.run_round(r5, "probes: capacity and tiny batch")):
            keep_all(t, rec)
    for t, rec in s.collect_background():
        keep(t, rec)
    if ctx.baseline is not None and "configured" not in ctx.optimizers:
        ctx.optimizers["configured"] = ctx.baseline


def tiny_settings() -> dict[str, Any]:
    """The tiny-batch probe's settings (G407): its 10 rows as one batch, stopped once clearly memorised."""
    from .checks import gradients as G     # G407's near-zero levels, which the probe stops below
    return dict(steps=TINY_STEPS, subset=TINY_ROWS, batch_size=TINY_ROWS, eval_every=0, record_every=0,
                instrument=False, stop_below=TINY_FITTED * G.TINY_FLOOR,
                stop_below_fraction=TINY_FITTED * G.TINY_FRACTION)


def judged_steps(spec: Spec, n_train: int) -> int:
    """The length a spec's training is judged at: its configured updates, capped where the baseline is capped.
    A batch of the whole table for 10 epochs is 10 updates, and a 100-update probe of it would look healthy."""
    return int(min(BASELINE_MAX_STEPS, max(1, configured_steps(spec, n_train))))


def weaker_regularization(spec: Spec) -> dict[str, Any] | None:
    """Weight decay and dropout set to zero (the probe for H303); None when neither is set."""
    changes: dict[str, Any] = {}
    if spec.optimizer.weight_decay > 0:
        changes["optimizer.weight_decay"] = 0.0
    if spec.model.layers and any(l.type.startswith("dropout") and (l.kwargs.get("p", 0.5) > 0)
                                 for l in spec.model.layers):
        changes["model.layers"] = [
            {**l.model_dump(exclude_none=True), "p": 0.0} if l.type.startswith("dropout") else l.model_dump(exclude_none=True)
            for l in spec.model.layers]
    return changes or None


def no_dropout(spec: Spec) -> Spec:
    """The tiny-batch test measures whether the model can memorise; dropout and weight decay would only
    hold it back."""
    if spec.optimizer.weight_decay:
        spec = spec.with_overrides(**{"optimizer.weight_decay": 0.0})
    if not spec.model.layers or not any(l.type.startswith("dropout") for l in spec.model.layers):
        return spec
    return spec.with_overrides(**{"model.layers": [l.model_dump(exclude_none=True) for l in spec.model.layers
                                                   if not l.type.startswith("dropout")]})


# ---- step 5: resources -------------------------------------------------------------------------------

def resources(s: Session) -> None:
    """Memory and throughput facts for R501-R503; on CUDA, the configured batch is tried for real and an
    out-of-memory is caught, the memory freed, and the largest batch that fits found by bisection."""
    from .checks import probes_needed
    from .probe import memory_probe
    ctx, spec = s.ctx, s.spec
    bs = spec.training.batch_size
    if "memory" not in probes_needed(s.select, s.ignore):
        ctx.env = dict(s.report.environment)
        return
    mem: dict[str, Any] = {"batch_size": bs, "device": ctx.device}
    if s.data.device.type == "cuda":
        res = memory_probe(spec, s.data, bs, s.seed)
        mem.update(res)
        if res.get("oom"):
            lo, hi = 1, bs   # lo fits (assumed; checked), hi does not
            if memory_probe(spec, s.data, 1, s.seed).get("oom"):
                mem["max_batch"] = 0
            else:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if memory_probe(spec, s.data, mid, s.seed).get("oom"):
                        hi = mid
                    else:
                        lo = mid
                mem["max_batch"] = lo
    else:
        import resource
        mem["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ctx.memory = mem
    ctx.env = dict(s.report.environment)
