"""The catalogue of finding codes: the one place every code is declared.

`explain`, `--select/--ignore`, the JSON `code`/`name` fields and the JUnit test
names all read from here (the shape of ruff's codes.rs / pylint's MSGS). The
texts follow the team contract findings.md (docs/findings.md is generated from here). No torch import here: `explain` and
`--help` stay fast.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import Enum, IntEnum


class Step(IntEnum):
    """The five troubleshooting steps, in the troubleshooting order of the source notes."""

    DATA = 1
    MODEL = 2
    HYPERPARAMETERS = 3
    GRADIENTS = 4
    RESOURCES = 5

    @property
    def label(self) -> str:
        return STEP_NAMES[self]

    @property
    def title(self) -> str:
        return STEP_TITLES[self]


STEP_NAMES = {Step.DATA: "data", Step.MODEL: "model", Step.HYPERPARAMETERS: "hyperparameters",
              Step.GRADIENTS: "gradients", Step.RESOURCES: "resources"}
STEP_TITLES = {Step.DATA: "Data", Step.MODEL: "Model structure", Step.HYPERPARAMETERS: "Hyperparameters",
               Step.GRADIENTS: "Code and gradients", Step.RESOURCES: "Resources"}
STEP_LETTERS = {"D": Step.DATA, "M": Step.MODEL, "H": Step.HYPERPARAMETERS, "G": Step.GRADIENTS,
                "R": Step.RESOURCES}


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


@dataclass(frozen=True)
class FindingSpec:
    code: str       # "D104"; never reused for another meaning
    name: str       # "unscaled-features"
    severity: Severity  # default severity; a check may raise or lower it with a stated reason
    detects: str    # when it fires
    fix: str        # the generic fix; findings carry one concrete for the user's spec
    why: str = ""   # why it matters (shown by `explain`)

    @property
    def step(self) -> Step:
        return STEP_LETTERS[self.code[0]]

    @property
    def explained_by(self) -> tuple[str, ...]:
        """The codes that, when found, explain this one (causes before symptoms)."""
        return EXPLAINED_BY.get(self.code, ())


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO

_ENTRIES = [
    # ---- Step 1: data --------------------------------------------------------------------
    FindingSpec("D100", "data-unreadable", E,
                "the file is missing, unparseable or empty, the target column/key is absent, or feature and "
                "target row counts differ",
                "fix the path or the file; the message names the file and what is wrong",
                "Nothing downstream can be checked on data that cannot be read."),
    FindingSpec("D101", "missing-values", E,
                "NaN/None/empty cells in the features or the target (count per column)",
                "impute (median/mode) or drop the rows or columns named in the evidence",
                "One NaN in a batch makes the loss NaN, and then every weight."),
    FindingSpec("D102", "non-finite-values", E,
                "+inf/-inf in the features or the target",
                "replace or clip the infinite values before training",
                "An infinite input turns activations, loss and gradients into inf/NaN."),
    FindingSpec("D103", "non-numeric-features", E,
                "string, object, bool or date columns among the features",
                "drop them (data.features lists the numeric columns) or encode them (one-hot or ordinal)",
                "A network needs numbers; text columns cannot be tensorized."),
    FindingSpec("D104", "unscaled-features", W,
                "features far from mean 0 / std 1, scales spread over orders of magnitude, or image data "
                "in [0, 255]; an error when some feature's max |x| exceeds 1e3",
                "set data.normalize: standardize (or scale pixels to [0, 1])",
                "Unscaled inputs make the loss surface badly conditioned: one lr is too large for the big "
                "features and too small for the small ones."),
    FindingSpec("D105", "constant-features", W,
                "zero-variance columns",
                "drop the constant columns",
                "A constant column carries no information and breaks standardization (std 0)."),
    FindingSpec("D106", "extreme-outliers", W,
                "values whose robust z-score (median/MAD) is far beyond the rest",
                "clip/winsorize the named columns, or inspect those rows",
                "A few huge values dominate the loss and the gradient."),
    FindingSpec("D107", "bad-label-format", E,
                "classification labels that are strings or floats, not 0..C-1 (offset or gaps), one-hot where "
                "the loss wants class indices or the reverse, or binary labels outside {0, 1}",
                "map the labels to integers 0..C-1 (or to the format the loss needs)",
                "Cross-entropy indexes the output by the label: an offset label is out of range or means "
                "another class."),
    FindingSpec("D108", "unscaled-target", W,
                "a regression target with a large magnitude or spread",
                "set data.normalize_target: true",
                "A target in the thousands gives an initial MSE in the millions and huge gradients."),
    FindingSpec("D109", "class-imbalance", W,
                "the majority/minority class ratio is 10 or more (per-class counts in the evidence)",
                "set loss.class_weights: balanced, or resample",
                "The model can reach a low loss by predicting the majority class."),
    FindingSpec("D110", "duplicates-or-conflicts", W,
                "duplicate rows, or identical features with different labels",
                "deduplicate; check the labelling of the conflicting rows",
                "Duplicates leak between train and validation; conflicts put a floor under the loss."),
    FindingSpec("D111", "too-little-data", W,
                "fewer than ~10 samples for some class, or far fewer samples than model parameters",
                "more data, a smaller model, or augmentation",
                "With few samples per parameter the model memorises the training set instead of learning."),
    FindingSpec("D112", "target-leakage", W,
                "a single feature predicts the target almost perfectly",
                "remove the leaking feature",
                "A leaked feature gives a perfect validation score that will not hold in use."),
    FindingSpec("D113", "train-validation-shift", W,
                "the validation distribution differs from the training distribution",
                "re-split the data (shuffled, stratified) or check the pipeline that made the files",
                "Validation loss then measures the shift, not generalisation."),
    FindingSpec("D114", "degenerate-target", E,
                "the target has a single class, or a regression target is constant",
                "check the labels and how the data were collected",
                "Any model 'succeeds' trivially on a constant target."),
    FindingSpec("D115", "token-id-out-of-range", E,
                "token ids below 0 or at/above the vocabulary (data.vocab_size, or the embedding's vocab), or "
                "not integers; found before any probe, which would crash on them",
                "raise the embedding's vocab to the largest id + 1, or map unknown ids to an <unk> id",
                "An embedding is a table lookup: an id past its last row is an index error on the CPU and a "
                "device-side assert on CUDA."),
    FindingSpec("D116", "padding-unmasked", W,
                "the sequences are mostly padding, or they are padded with an id the model does not mask "
                "(no embedding padding_idx, or a different one), so attention and pooling read the padding",
                "set the embedding's padding_idx to data.pad_id (the model then masks it); pad per batch",
                "Unmasked padding is averaged into the pooled representation and attended to: the model "
                "learns from the sequence length instead of its content."),
    FindingSpec("D117", "sequence-length-spread", W,
                "the longest sequences are many times the median length, so most of every padded batch is "
                "padding",
                "truncate the longest sequences or bucket them by length (pad per batch)",
                "Compute and memory grow with the longest sequence of the data, not the typical one."),
    FindingSpec("D118", "degenerate-sequences", W,
                "constant sequences (one id repeated) or near-duplicate sequences (one token apart), far more "
                "often than shuffled data would give",
                "deduplicate, and check how the sequences were produced (a stuck tokenizer, boilerplate)",
                "Near-copies weigh some examples many times over and leak between training and validation."),
    # ---- Step 2: model structure ---------------------------------------------------------
    FindingSpec("M200", "model-build-failed", E,
                "the model spec is invalid: an unknown layer, shapes that do not chain, an input size that does "
                "not match the data, or a user class that does not import",
                "fix the layer named in the message so the shapes chain (a missing flatten, or linear layers "
                "for conv layers on a table, is proposed as a spec change, built and diagnosed before it is written)",
                "Nothing can be probed on a model that cannot run a forward pass."),
    FindingSpec("M201", "output-size-mismatch", E,
                "output units != number of classes (classification) or target dimensions (regression)",
                "set the last layer's size to the number of classes / targets",
                "The output layer needs one unit per class: extra outputs are classes that never occur; too few "
                "make some labels impossible."),
    FindingSpec("M202", "output-activation-mismatch", E,
                "softmax/log_softmax/sigmoid before a loss that applies it itself, ReLU/sigmoid on an unbounded "
                "regression output, or probabilities fed to a logits loss and the reverse (for a model class: "
                "every output at init inside (0, 1) with a logits loss)",
                "remove or change the last activation",
                "A double softmax squashes the gradient; a ReLU output cannot produce negative targets."),
    FindingSpec("M203", "loss-task-mismatch", E,
                "MSE/L1 on class labels, cross-entropy on a continuous target, BCE on multi-class",
                "use the loss that fits the task",
                "The loss defines what is learned: a loss meant for another task trains towards the wrong goal."),
    FindingSpec("M204", "symmetric-init", E,
                "weights initialised to zeros or a constant: the neurons of a layer stay identical",
                "he init for ReLU-family nets, xavier for tanh/sigmoid",
                "Identical neurons get identical gradients and never differentiate."),
    FindingSpec("M205", "init-scale-mismatch", W,
                "activation std shrinks or grows layer by layer at init by a large factor (measured on a batch); "
                "in a net too shallow for that trend, hidden weights drawn > 4x wider than He's std sqrt(2/fan_in)",
                "an init that matches the activation (he for ReLU, xavier for tanh/sigmoid)",
                "Signals that vanish or blow up at init give vanishing or exploding gradients."),
    FindingSpec("M206", "saturating-deep-network", W,
                "many sigmoid/tanh layers without normalisation or residual connections",
                "ReLU-family activations, BatchNorm/LayerNorm, or residual connections",
                "Each saturating layer multiplies the gradient by at most 0.25 (sigmoid), so a deep stack of them "
                "leaves the first layers with almost no gradient."),
    FindingSpec("M207", "abnormal-initial-loss", W,
                "the loss at init is far from its expected value (ln C for C-class cross-entropy, the target "
                "variance for MSE)",
                "check the output layer, the init scale and the labels",
                "A wrong initial loss points at the output layer, the init or the labels before any training."),
    FindingSpec("M208", "capacity-mismatch", W,
                "the model cannot fit a small training subset (too small), has far more parameters than the "
                "data can support, or is one affine map (no activation between its layers; a remark that becomes a "
                "warning when a probe with activations scores clearly better)",
                "widen/deepen the model, add the missing activations, or shrink it",
                "A model that cannot fit 256 samples cannot fit the data set; one far larger than the data "
                "memorises it."),
    # ---- Step 3: hyperparameters ---------------------------------------------------------
    FindingSpec("H300", "lr-too-high", E,
                "the configured lr diverges, goes NaN or oscillates in a probe",
                "set optimizer.lr to the lr the sweep found",
                "Too high an lr makes the loss oscillate or blow up ('Why neural network training fails: a summary': "
                "too high a learning rate makes training run away)."),
    FindingSpec("H301", "lr-too-low", W,
                "the configured lr makes far less progress than the best lr of the sweep",
                "set optimizer.lr to the lr the sweep found",
                "Too low an lr makes convergence very slow: the loss falls, but the budget runs out first."),
    FindingSpec("H302", "batch-size", W,
                "the configured batch size is far from what the probes favour, or does not fit in memory",
                "set training.batch_size to the probed size",
                "Large batches make fewer updates per epoch; tiny ones are noisy."),
    FindingSpec("H303", "over-regularized", W,
                "weight decay or dropout is strong enough that the model underfits; a weaker setting fits "
                "clearly better in a probe",
                "lower optimizer.weight_decay / the dropout p",
                "Too strong regularisation (weight decay, dropout) keeps the model from fitting even the training data."),
    FindingSpec("H304", "overfitting", W,
                "train loss falls while validation loss stays flat or rises; an error when the training loss falls "
                "below a constant prediction's but the validation metric stays at chance (labels that do not "
                "belong to their rows, features without signal)",
                "stop at the epoch of the lowest validation loss (training.epochs), dropout, weight decay, more data",
                "When the training loss falls while the validation loss stays flat or rises, the network memorises "
                "the training set instead of learning what generalises."),
    FindingSpec("H305", "underfitting", W,
                "train and validation loss both stay high",
                "more capacity, longer training, less regularisation",
                "When both the training and the validation loss stay high, the model has not learned the basic "
                "pattern of the data."),
    FindingSpec("H306", "loss-curve-pattern", I,
                "which of the five train/validation patterns the probe shows (learning; overfitting; data "
                "problem; plateau; diverging)",
                "the pattern's advice",
                "The two loss curves together tell the state of a network ('Why neural network training fails: a "
                "summary', on reading train and test loss): both falling is learning; training falling with "
                "validation flat or rising is overfitting; training flat with validation falling points at the "
                "data; both flat is a plateau; both rising is divergence."),
    FindingSpec("H307", "optimizer-choice", I,
                "another optimizer (e.g. Adam vs plain SGD) trains clearly faster in a probe",
                "switch optimizer.name",
                "Plain SGD at a poorly chosen lr oscillates or crawls; Adam at lr 1e-3 is a robust default to compare "
                "against."),
    FindingSpec("H308", "not-converged", I,
                "the loss is still falling steeply at the end of the configured training, or a configured training "
                "shorter than the probe ends clearly above where the same spec gets; a warning when a probe "
                "shows more epochs raise the validation metric",
                "raise training.epochs",
                "Make sure the training runs long enough before changing anything else: a loss still falling "
                "steeply has not converged."),
    FindingSpec("H309", "no-warmup", W,
                "Adam/AdamW on a transformer without lr warmup, where the configured probe breaks (diverges, "
                "oscillates or stalls) and the same lr with a warmup trains",
                "set optimizer.schedule: {warmup_steps: N}",
                "Adam's first updates are large everywhere at once; post-LN transformers diverge without a "
                "warmup (Liu et al. 2020; Xiong et al. 2020)."),
    FindingSpec("H310", "lr-below-search-range", W,
                "no lr from --max-lr down to --min-lr trains, and the search extended down by decades (to "
                "1e-6) found a lower one that does (fine-tuning, very sensitive models)",
                "set optimizer.lr to the verified low lr",
                "Fine-tuning a pretrained network wants lrs far below 1e-4; an lr finder that stops at 1e-4 "
                "suggests far too much."),
    FindingSpec("H311", "weight-decay-on-norm-bias", W,
                "weight decay is applied to norm-layer gains and biases, and a probe that exempts them (nanoGPT's "
                "rule) trains measurably better",
                "set optimizer.decay_norm_bias: false",
                "Decaying a LayerNorm gain pulls it towards 0 and switches the layer off; biases have nothing "
                "to regularise."),
    # ---- Step 4: code and gradients ------------------------------------------------------
    FindingSpec("G400", "non-finite-training", E,
                "NaN/Inf appears in the loss, gradients or weights; the first step and layer are reported",
                "lower the lr, clip gradients, check the data, use logits losses",
                "An overflow (exp(100) is already inf in float16) turns the loss into inf or NaN; once a weight is "
                "NaN it stays NaN."),
    FindingSpec("G401", "vanishing-gradients", W,
                "the gradient norm of the first layers is orders of magnitude below the last layers "
                "(an error when the first layers get ~0)",
                "ReLU-family activations, BatchNorm, residual connections, he init",
                "When the gradient shrinks on its way back, the first layers stop learning."),
    FindingSpec("G402", "exploding-gradients", W,
                "the total or per-layer gradient norm is very large or grows across steps (an error on overflow)",
                "gradient clipping (optimizer.grad_clip), a lower lr, normalisation",
                "Huge gradients make updates overshoot, and the loss oscillates or overflows."),
    FindingSpec("G403", "dead-relu", W,
                "a large fraction of ReLU units never activate on the probe batches",
                "LeakyReLU/ELU, a lower lr; he init when the units are dead at init already",
                "A ReLU unit that never activates has zero gradient and never recovers."),
    FindingSpec("G404", "saturated-activations", W,
                "sigmoid/tanh outputs mostly in their flat regions",
                "rescale the inputs, change the activation, add normalisation",
                "In the flat regions of sigmoid/tanh the derivative is ~0, so little gradient gets through."),
    FindingSpec("G405", "params-not-updating", E,
                "parameters get no gradient, are frozen, are missing from the optimizer, or do not change after "
                "a step",
                "fix requires_grad, the optimizer's parameter groups, or the no_grad misuse",
                "Parameters that never change were never trained (check that gradient computation is not disabled)."),
    FindingSpec("G406", "update-ratio", W,
                "the update-to-weight norm ratio is far from ~1e-3 (too big: unstable; too small: stuck)",
                "adjust the lr",
                "Karpathy's rule of thumb: updates about 1e-3 of the weights."),
    FindingSpec("G407", "cannot-overfit-small-batch", E,
                "the model cannot drive the loss near zero on ~10 samples",
                "an implementation or label bug; check the step 2 findings",
                "Any working model and training loop can memorise ~10 samples; if it cannot, the bug is in the "
                "code, the labels or the model, not in the hyperparameters."),
    FindingSpec("G408", "training-step-bug", E,
                "a user-supplied training step misbehaves: gradients not zeroed, ascent instead of descent, lr "
                "not applied, model left in eval mode, loss detached or computed under no_grad",
                "the specific bug, named in the message",
                "A bug in the training step (gradients accumulating, a wrong update rule, the model in eval mode) "
                "makes a correct model fail to train."),
    FindingSpec("G409", "probe-crashed", E,
                "a probe training run raised an exception (in the model's forward, the loss, the backward pass or "
                "the optimizer step) instead of training",
                "the message names the exception, the phase and the user's file:line; fix that code or the spec "
                "values it names",
                "A run that cannot train is not healthy: nothing after the crash was checked."),
    FindingSpec("G410", "fp16-overflow", E,
                "with training.precision fp16, values overflow float16 (inf/NaN at a step), or the loss scale "
                "collapses (every step skipped); the first step and layer are reported",
                "use training.precision: bf16 (float32's range), or a GradScaler (training.grad_scaler: true)",
                "float16 tops out at 65504 and flushes small gradients to zero; loss scaling fixes the "
                "underflow, not activations that overflow."),
    FindingSpec("G411", "attention-collapse", W,
                "per-head attention entropy near zero (every query on one key) at init or during the probe, "
                "or near uniform throughout a probe that does not learn",
                "the init (model.init: default), a lower lr or a warmup; pre-LN (norm_first: true)",
                "Attention entropy collapse goes with unstable transformer training (Zhai et al. 2023); "
                "uniform attention that never sharpens has learned nothing."),
    FindingSpec("G412", "accumulation-loss-not-divided", E,
                "the user's step with training.accumulate k sums the micro-batch losses without dividing by k: "
                "the gradient is k times the mean gradient",
                "divide each micro-batch loss by the accumulation steps before backward()",
                "An undivided accumulated loss multiplies the effective lr by k."),
    FindingSpec("G413", "zero-grad-every-micro-step", E,
                "the user's step with training.accumulate k zeroes the gradients on every micro-batch, so the "
                "update uses the last micro-batch only",
                "call optimizer.zero_grad() once per optimizer step, after optimizer.step()",
                "Zeroing inside the accumulation loop throws away k-1 of the k micro-batches."),
    # ---- Step 5: resources ---------------------------------------------------------------
    FindingSpec("R500", "device", I,
                "which device ran the probes (a warning when a GPU is present but unused)",
                "use the GPU (training.device: cuda)",
                "Probes on the CPU when a GPU is available are slow, and so is the real training."),
    FindingSpec("R501", "out-of-memory", E,
                "the configured batch size runs out of memory",
                "the largest batch that fits; mixed precision; gradient accumulation",
                "A batch that does not fit in GPU memory stops training; lower the batch size or use mixed precision."),
    FindingSpec("R502", "memory-headroom", I,
                "peak memory per step vs what the device has; whether mixed precision would help",
                "mixed precision, a smaller batch",
                "Too little GPU memory limits the model and batch size that can be trained."),
    FindingSpec("R503", "throughput", I,
                "step time and samples/s; how long the configured training would take",
                "-",
                "Slow steps make every experiment slow; the estimate says what the configured training costs."),
    FindingSpec("R504", "environment", I,
                "torch/python versions, deterministic settings, CPU threads",
                "-",
                "Framework versions and settings explain differences between machines."),
]

# ---- causes before symptoms -------------------------------------------------------------------
# For each code, the codes that can explain it: when one of them is found (at warning or error level) in
# the same report, this finding is listed as its symptom and never becomes the first fix. The triage pass
# (triage.py) applies this table and nothing else decides it. Sources: the seeds' five-step order (a data
# or model fault shows up later as an lr, gradient or curve symptom) and the fault zoo's wrong first fixes
# (a symptom named instead of its cause).
_MODEL_FAULTS = ("M201", "M202", "M203", "M204", "M205", "M206", "M207", "M208")
_UNSCALED = ("D104", "D108")
_BAD_VALUES = ("D101", "D102")
EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    "D106": ("D102",),                                   # infinite values are the most extreme outliers
    "M207": ("M201", "M202", "M203", "M204", "M205", "D107") + _UNSCALED,
    "M208": ("M202", "M203", "M204", "M205", "M206", "H303") + _UNSCALED,
    "H300": ("M205",) + _BAD_VALUES + _UNSCALED,         # unscaled inputs make every larger lr blow up
    "H301": ("M204", "M206", "G405") + _UNSCALED,       # frozen parameters make every lr look too low
    "H302": ("H300", "H301") + _UNSCALED,
    # a validation curve that goes nowhere (H304's "at chance" reading) also follows from an lr, a regularisation
    # or a model fault found beside it: those come first
    "H304": ("D110", "D111", "D112", "D113", "H300", "H301", "H303") + _MODEL_FAULTS + _UNSCALED,
    "H305": ("H300", "H301", "H303", "H307", "G401", "G403", "G404") + _MODEL_FAULTS + _UNSCALED,
    "H306": ("H300", "H301", "H303", "H304", "H307") + _MODEL_FAULTS + _UNSCALED + _BAD_VALUES,
    "H307": ("H300", "H301") + _UNSCALED,
    "H308": ("H301", "H302"),
    "G400": ("H300", "M202", "M205") + _BAD_VALUES + _UNSCALED,
    "G401": ("M204", "M205", "M206", "G403", "G404"),   # dead units pass no gradient to the layers below
    "G402": ("H300", "M205") + _UNSCALED,
    "G403": ("H300", "M205") + _UNSCALED,
    "G404": ("M205", "M206") + _UNSCALED,
    "G405": ("G408",),
    "G406": ("H300", "H301") + _UNSCALED,
    "G407": _MODEL_FAULTS + ("D107", "H300", "H303", "H307", "G401", "G403", "G404", "G405", "G408") + _UNSCALED,
    "G409": ("M200", "M201", "M202", "M203", "D107") + _BAD_VALUES,
    # transformer-era codes: a cause found in an earlier step explains the later symptom
    "H309": ("M205",),                                   # an init that is off makes every early update too big
    "G410": _UNSCALED + _BAD_VALUES,                     # unscaled or infinite inputs overflow float16 first
    "G411": ("M204", "M205", "H309"),                    # an oversized init or no warmup collapses attention
}
# a symptom the new codes explain (added to the existing entries)
for _code, _causes in (("G400", ("G410",)), ("H300", ("H309",)), ("H303", ("H311",))):
    EXPLAINED_BY[_code] = EXPLAINED_BY.get(_code, ()) + _causes

CATALOGUE: dict[str, FindingSpec] = {e.code: e for e in _ENTRIES}
BY_NAME: dict[str, FindingSpec] = {e.name: e for e in _ENTRIES}


def lookup(code_or_name: str) -> FindingSpec | None:
    key = code_or_name.strip()
    return CATALOGUE.get(key.upper()) or BY_NAME.get(key.lower())


def close_matches(word: str) -> list[str]:
    return difflib.get_close_matches(word.upper(), list(CATALOGUE), n=3, cutoff=0.5) + \
        difflib.get_close_matches(word.lower(), list(BY_NAME), n=2, cutoff=0.6)


# ---- selection (ruff-style prefixes: the longest matching prefix decides, ignore wins a tie) ----

def parse_codes(text: str | None) -> list[str]:
    """`"D1, G403"` -> ["D1", "G403"]; each item must be a prefix of some code (else a usage error)."""
    if not text:
        return []
    items = [t.strip().upper() for t in text.split(",") if t.strip()]
    for item in items:
        if not any(code.startswith(item) for code in CATALOGUE):
            from .errors import UsageError
            hint = close_matches(item)
            raise UsageError(f"unknown finding code or prefix '{item}'"
                             + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                             + "; `nn-doctor explain --all` lists the codes")
    return items


def enabled(code: str, select: list[str], ignore: list[str]) -> bool:
    def depth(prefixes: list[str]) -> int:  # longest prefix of `code` in the list; -1 when none matches
        return max((len(p) for p in prefixes if code.startswith(p)), default=-1)
    return depth(select or [""]) > depth(ignore)
