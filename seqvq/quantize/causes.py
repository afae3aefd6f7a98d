"""The rules that name why a bottleneck collapsed and what to change (``seqvq doctor``, :func:`diagnose`).

Each rule reads a :class:`~seqvq.quantize.diagnosis.BottleneckState` (measured at the end of the run), the run's
settings (:func:`settings_of` a quantizer, or :func:`settings_from_config` a run config) and the run's history
(its logged records, oldest first: ``train`` records with ``active_codes`` and ``quantization_error``, and the
``doctor`` records ``train.doctor_every`` writes), and returns a :class:`Finding` naming the cause and the remedy as
config overrides, or None.  The rules are tried in the order of :data:`RULES` (the first that matches names the
cause), each citing its evidence: a paper section or a row of a recipe's table.  Their thresholds were set on the
recorded runs under ``tests/data/doctor/`` (``tests/test_doctor.py`` holds the confusion table).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

COLLAPSED_USAGE = 0.25  # a bottleneck using under a quarter of its codes has collapsed (Huh §3, Fig. 2)
FULL_USAGE = 0.75  # re-estimated codebooks of a healthy run use more (recipes/wsj RESULTS.md: 487 of 512)
SCALE_MISMATCH = 3.0  # encoder outputs this many times the codes' norm (or less than its inverse)
STILL_CODES = 0.05  # used codes moved less than this fraction of their initial norm: never learned
DRIFTED = 0.5  # D(P, C) above half the outputs' variance: the codes no longer describe the outputs
ERROR_GROWTH = 1.5  # the quantization error ended this many times above its lowest value of the run
DEAD_GROWTH = 0.5  # active codes fell under half of their peak
STRANDED = 3.0  # D(C, P) this many times D(P, C): codes left behind where the data no longer is (Huh Fig. 2)
HIGH_EMA_DECAY = 0.999  # Łańcucki Tables I/II use gamma 0.9-0.99
SMALL_RESERVOIR = 4  # reservoir vectors per code below which k-means places codes on too few points


@dataclass
class Finding:
    """A named cause, what shows it, and the remedy as config overrides."""

    bottleneck: str
    cause: str  # one of CAUSES
    evidence: str  # the measured figures that show it
    overrides: list[str]
    source: str  # the paper section or recipe table the rule rests on

    def __str__(self) -> str:
        remedy = " ".join(f"`{item}`" for item in self.overrides) if self.overrides else "nothing to change"
        return f"{self.bottleneck}: {self.cause}: {self.evidence} -> {remedy}  [{self.source}]"


CAUSES = ("warm-up longer than the run", "FSQ without a norm before it", "re-estimation on a too small reservoir",
          "re-estimation on a stale reservoir", "EMA decay too high", "codes not learned (codebook LR too slow)",
          "dead codes growing", "encoder drift from the codes", "collapse from scale mismatch", "index collapse",
          "healthy")


# ------------------------------------------------------------------------------------------------ settings
def settings_of(module: nn.Module, prefix: str = "model.quantizer") -> dict:
    """The options the rules read, from a quantizer module (``prefix``: where its options sit in a run config)."""
    from .core import VectorQuantizer

    if not isinstance(module, VectorQuantizer):
        return {"prefix": prefix, "kind": type(module).__name__.lower(), "pre_norm": module.norm is not None}
    reestimation = module.reestimation
    return {
        "prefix": prefix, "kind": "vq", "pre_norm": module.norm is not None,
        "codebook_update": module.codebook_update, "ema_decay": module.ema.decay if module.ema is not None else None,
        "replace_dead_after": module.replacement.life_span if module.replacement is not None else None,
        "kmeans_init": module.kmeans_init,
        "reestimate": None if reestimation is None else {
            "init_steps": reestimation.init_steps, "reservoir_size": reestimation.reservoir.size,
            "restart_reservoir": reestimation.restart_reservoir, "every": reestimation.every,
            "steps": reestimation.steps},
    }


def settings_from_config(config: dict, prefix: str = "model.quantizer") -> dict:
    """The options the rules read, from a run config (its quantizer at ``prefix``, its ``train:`` section)."""
    section = config
    for key in prefix.split("."):
        section = (section or {}).get(key) or {}
    train = config.get("train") or {}
    kind = section.get("kind", "vq")
    reestimate = section.get("reestimate")
    if reestimate is not None:
        scale = reestimate.get("steps_per_epoch") or 1
        reestimate = {"init_steps": reestimate.get("init_steps", 1000) * scale,
                      "reservoir_size": reestimate.get("reservoir_size", 20480),
                      "restart_reservoir": reestimate.get("restart_reservoir", True),
                      "every": reestimate.get("every", 100) * scale, "steps": reestimate.get("steps", 5000) * scale}
    return {
        "prefix": prefix, "kind": "vq" if kind in ("vq", "residual") else kind,
        "pre_norm": bool(section.get("pre_norm", False)),
        "codebook_update": section.get("codebook_update", "gradient"),
        "ema_decay": section.get("ema_decay", 0.99) if section.get("codebook_update") == "ema" else None,
        "replace_dead_after": section.get("replace_dead_after"), "kmeans_init": bool(section.get("kmeans_init")),
        "reestimate": reestimate, "lr": train.get("lr", 1e-3), "codebook_lr": train.get("codebook_lr"),
        "steps": train.get("steps"),
    }


def _series(history: list[dict], name: str, split: str = "train") -> list[tuple[int, float]]:
    return [(r["step"], float(r[name])) for r in history
            if r.get("split") == split and isinstance(r.get(name), (int, float))]


# ------------------------------------------------------------------------------------------------ the rules
def warm_up_longer_than_run(state, settings, history):
    """Łańcucki Algorithm 1: the layer passes its input through until M_init; a run that ends before it never
    quantized (``seqvq.train.warmup``)."""
    if state.kind != "vq" or state.quantizing or not settings.get("reestimate"):
        return None
    first = settings["reestimate"]["init_steps"]
    steps = settings.get("steps") or state.step or first
    return ("warm-up longer than the run",
            f"the run ended at step {state.step} inside the pass-through warm-up (reestimate.init_steps={first})",
            [f"{settings['prefix']}.reestimate.init_steps={max(1, steps // 4)}"], "Łańcucki 2020 Algorithm 1")


def fsq_without_norm(state, settings, history):
    """FSQ bounds each channel with tanh; without a norm before it the encoder's scale leaves most levels unused —
    docs/which-remedy.md: FSQ on ResNet18 uses 1 code, FSQ + BN 87 (recipes/imagenet100/RESULTS.md)."""
    if "finitescalar" not in state.kind.lower() and settings.get("kind") != "fsq":
        return None
    if settings.get("pre_norm") or state.usage >= COLLAPSED_USAGE:
        return None
    return ("FSQ without a norm before it", f"{state.codes_used:.0f} of {state.codebook_size} codes, no norm before FSQ",
            [f"{settings['prefix']}.pre_norm=true"], "recipes/imagenet100/RESULTS.md, FSQ vs FSQ + BN")


def reservoir_too_small(state, settings, history):
    """Algorithm 1 clusters the reservoir into K codes; with few vectors per code k-means places most codes on
    single outliers (Łańcucki §III-B uses reservoirs of many times K; recipes' reservoirs hold 4-20 K)."""
    reestimate = settings.get("reestimate")
    if state.kind != "vq" or not reestimate or not state.quantizing:
        return None
    per_code = reestimate["reservoir_size"] / max(state.codebook_size * state.num_codebooks, 1)
    if per_code >= SMALL_RESERVOIR or state.usage >= FULL_USAGE:
        return None
    return ("re-estimation on a too small reservoir",
            f"reservoir of {reestimate['reservoir_size']} vectors for {state.codebook_size} codes "
            f"({per_code:.1f} per code); {state.codes_used:.0f} codes used",
            [f"{settings['prefix']}.reestimate.reservoir_size={20 * state.codebook_size * state.num_codebooks}"],
            "Łańcucki 2020 §III-B, Algorithm 1")


def reservoir_stale(state, settings, history):
    """A reservoir not restarted holds outputs from the whole history, warm-up included; k-means on it places codes
    where the encoder no longer is (Łańcucki §III-B: re-estimation must keep up with the encoder's outputs)."""
    reestimate = settings.get("reestimate")
    if state.kind != "vq" or not reestimate or not state.quantizing or reestimate.get("restart_reservoir", True):
        return None
    stranded = (state.codes_to_data is not None and state.data_to_codes is not None
                and state.codes_to_data > STRANDED * state.data_to_codes)
    if state.usage >= FULL_USAGE and not stranded:
        return None
    return ("re-estimation on a stale reservoir",
            f"reservoir never restarted; {state.codes_used:.0f} of {state.codebook_size} codes used, codes far from "
            f"the data: D(C,P) {_fmt(state.codes_to_data)} against D(P,C) {_fmt(state.data_to_codes)}",
            [f"{settings['prefix']}.reestimate.restart_reservoir=true"], "Łańcucki 2020 §III-B")


def ema_decay_too_high(state, settings, history):
    """With a discount near 1 the EMA codebook (Łańcucki eq. 4) barely moves: Łańcucki Tables I/II train with
    gamma 0.9-0.99; recipes/scribblelens and recipes/wsj RESULTS.md: EMA needs its discount tuned (0.9)."""
    decay = settings.get("ema_decay")
    if state.kind != "vq" or settings.get("codebook_update") != "ema" or decay is None or decay < HIGH_EMA_DECAY:
        return None
    if not _collapsed_or_still(state):
        return None
    return ("EMA decay too high", f"ema_decay={decay}; used codes moved {_fmt(state.used_code_motion)} of their norm, "
            f"{state.codes_used:.0f} of {state.codebook_size} codes used",
            [f"{settings['prefix']}.ema_decay=0.9"], "Łańcucki 2020 eq. 4, Tables I-II")


def codes_not_learned(state, settings, history):
    """Codes the data uses that barely moved from their initialisation were never trained: Łańcucki §IV trains the
    codebook at 10x the LR (recipes/wsj RESULTS.md, "+ codebook LR" row)."""
    if state.kind != "vq" or settings.get("codebook_update") == "ema" or state.used_code_motion is None:
        return None
    if state.used_code_motion >= STILL_CODES:
        return None
    lr = settings.get("lr") or 1e-3
    return ("codes not learned (codebook LR too slow)",
            f"used codes moved {state.used_code_motion:.2f} of their norm; {state.codes_used:.0f} of "
            f"{state.codebook_size} codes used",
            [f"train.codebook_lr={10 * lr:g}"], "Łańcucki 2020 §IV (codebook LR 10x)")


def dead_codes_growing(state, settings, history):
    """Codes in use early that fall out of use and stay dead, left behind where the data no longer is (D(C, P)
    much larger than D(P, C): the bifurcated codebook of Huh Fig. 2): Huh §3 replaces codes unused for 20 steps
    (recipes/vqvae RESULTS.md: replacement is what raises code usage, 82 -> 850 codes)."""
    if state.kind != "vq" or settings.get("replace_dead_after"):
        return None
    active = _series(history, "active_codes")
    if len(active) < 3:
        return None
    peak_step, peak = max(active, key=lambda point: point[1])
    end = sum(value for _, value in active[-3:]) / 3
    if end >= DEAD_GROWTH * peak or peak_step >= active[-1][0]:
        return None
    if state.data_to_codes is None or state.codes_to_data is None or (
            state.codes_to_data < STRANDED * state.data_to_codes):
        return None
    return ("dead codes growing", f"active codes fell from {peak:.0f} (step {peak_step}) to {end:.0f}; the unused "
            f"codes lie where the data no longer is: D(C,P) {state.codes_to_data:.3g}, D(P,C) "
            f"{state.data_to_codes:.3g}",
            [f"{settings['prefix']}.replace_dead_after=20"], "Huh 2023 §3 (replacement policy)")


def encoder_drift(state, settings, history):
    """The encoder's outputs moving away from the codes: D(P, C) large against the outputs' spread and the
    quantization error growing (Huh §3 / Fig. 2: the commitment term holds the encoder to the codes; docs/
    which-remedy.md: on speech the encoder drifts away from the codes unless a BN bounds it)."""
    if state.kind != "vq" or state.relative_error is None:
        return None
    error = [point for point in _series(history, "quantization_error") if point[1] > 0]
    if len(error) < 3:
        return None
    low = min(value for _, value in error)
    growth = sum(value for _, value in error[-3:]) / 3 / max(low, 1e-12)
    if growth < ERROR_GROWTH or state.relative_error < DRIFTED:
        return None
    return ("encoder drift from the codes",
            f"quantization error grew {growth:.1f}x; D(P,C) is {state.relative_error:.2f} of the outputs' variance",
            [f"{settings['prefix']}.pre_norm=true", f"{settings['prefix']}.beta=0.8"],
            "Huh 2023 §3, eq. 10 (commitment); docs/which-remedy.md")


def scale_mismatch(state, settings, history):
    """Collapse with the codes at another scale than the encoder's outputs: only the codes nearest the data's hull
    are ever chosen (Łańcucki §III-A: BN before the codes, codes initialised smaller; Huh §4.1 affine)."""
    if state.kind != "vq" or state.usage >= COLLAPSED_USAGE or not state.encoder_norm or not state.code_norm:
        return None
    ratio = state.encoder_norm / state.code_norm
    if 1 / SCALE_MISMATCH < ratio < SCALE_MISMATCH:
        return None
    prefix = settings["prefix"]
    return ("collapse from scale mismatch",
            f"index collapse: {state.codes_used:.0f} of {state.codebook_size} codes; encoder outputs have norm "
            f"{state.encoder_norm:.2f}, codes {state.code_norm:.2f}",
            _codebook_from_data(settings, state),
            "Łańcucki 2020 §III-A/B; recipes/wsj RESULTS.md Table I (+BN + data-dep reest)")


def index_collapse(state, settings, history):
    """Few codes in use with matched scales: replace dead codes (Huh §3; recipes/vqvae and imagenet100 RESULTS.md:
    replacement is the remedy that matters most alone)."""
    if state.usage >= COLLAPSED_USAGE:
        return None
    remedy = ([f"{settings['prefix']}.replace_dead_after=20"] if not settings.get("replace_dead_after")
              else _codebook_from_data(settings, state))
    return ("index collapse", f"{state.codes_used:.0f} of {state.codebook_size} codes used", remedy, "Huh 2023 §3; recipes/imagenet100 RESULTS.md Table 2")


RULES = (warm_up_longer_than_run, fsq_without_norm, reservoir_too_small, reservoir_stale, ema_decay_too_high,
         encoder_drift, scale_mismatch, codes_not_learned, dead_codes_growing, index_collapse)


def _collapsed_or_still(state) -> bool:
    still = state.used_code_motion is not None and state.used_code_motion < STILL_CODES
    return still or state.usage < COLLAPSED_USAGE


def _codebook_from_data(settings, state) -> list[str]:
    """BN before the codes and Algorithm 1's re-estimation (the first remedy docs/which-remedy.md recommends), the
    parts the run lacks; codes at the outputs' scale when it has both."""
    prefix, remedy = settings["prefix"], []
    if not settings.get("pre_norm"):
        remedy.append(f"{prefix}.pre_norm=true")
    if not settings.get("reestimate") and not settings.get("kmeans_init"):
        first = max(1, (settings.get("steps") or 1000) // 10)
        remedy.append(f"{prefix}.reestimate={{init_steps: {first}, every: {first}, steps: {5 * first}}}")
    if not remedy and state.encoder_norm:
        remedy.append(f"{prefix}.init_scale={state.encoder_norm:.2g}")
    return remedy


def _fmt(value) -> str:
    return "?" if value is None else f"{value:.3g}"


def name_cause(state, settings: dict, history: list[dict]) -> Finding:
    """The first rule of :data:`RULES` that matches, or ``healthy``."""
    for rule in RULES:
        found = rule(state, settings, history)
        if found is not None:
            cause, evidence, overrides, source = found
            return Finding(state.name, cause, evidence, overrides, source)
    return Finding(state.name, "healthy",
                   f"{state.codes_used:.0f} of {state.codebook_size} codes used, perplexity {state.perplexity:.1f}",
                   [], "")


def describe(diagnosis) -> str:
    """A short text report: each bottleneck's figures, then its named cause and remedy."""
    lines = []
    for state, finding in zip(diagnosis.bottlenecks, diagnosis.findings):
        lines.append(f"{state.name} ({state.kind}, step {state.step}): perplexity {state.perplexity:.1f}, "
                     f"{state.codes_used:.0f} of {state.codebook_size} codes used, {state.dead_codes:.0f} dead"
                     + (f" (oldest {state.dead_code_ages[0]} steps)" if state.dead_code_ages else ""))
        if state.encoder_norm is not None:
            gap = "not measured" if state.gradient_gap is None else f"{state.gradient_gap:.3g}"
            lines.append(f"  norms: encoder outputs {state.encoder_norm:.3g}, codes {_fmt(state.code_norm)}; "
                         f"D(P,C) {_fmt(state.data_to_codes)}, D(C,P) {_fmt(state.codes_to_data)}, "
                         f"relative error {_fmt(state.relative_error)}; used codes moved "
                         f"{_fmt(state.used_code_motion)}; STE gradient gap {gap}; "
                         f"{'quantizing' if state.quantizing else 'still in the pass-through warm-up'}")
        lines.append(f"  -> {finding}")
    return "\n".join(lines)
