"""What a per-sequence fit is told by its configs, typed and checked before any fit starts.

Two configs drive the fit of a scene-adaptive codec (:func:`nvc_train.training.overfit.fit_sequence`):

* the **preset** (``configs/overfit/<model>.yaml``, :class:`OverfitPreset`): lambdas per rate point,
  the phases of the schedule and the numbers of the loop. Every number is required: a preset that
  lacks one is refused with the keys it lacks, because a silent code default is a second value
  of the same number that can disagree with the configs (it did: ``parameter_lr_ratio`` fell back
  to 0.1 in code while every preset says 20);
* the **fit settings** (``codec.trainer`` and ``codec.data`` in ``configs/codec/adaptive.yaml``,
  :class:`FitSettings`): the Trainer's accelerator, devices and precision, and the ``_target_`` of
  the data module that serves the sequence. Where or how to run is not a property of a preset, so
  ``python evaluate.py model=c3_tiny ... codec.trainer.accelerator=gpu`` moves every fit to a GPU.
  Their defaults (:data:`FIT_TRAINER_DEFAULTS`, :data:`SEQUENCE_DATA_TARGET`) are the config file's
  values, for an ``AdaptiveCodec`` built in code; ``tests/test_overfit.py`` keeps the two equal.

This module imports neither torch nor Lightning: the codec adapter checks its configs at
construction, long before (and without) any fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nvc_train.training.distortions import DISTORTIONS
from nvc_train.training.errors import TrainingError

#: The fit's Trainer when the config gives none: one CPU process in float32 (configs/codec/adaptive.yaml).
FIT_TRAINER_DEFAULTS: Mapping[str, Any] = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
#: The data module serving one sequence's frames (``datamodules/sequence.py``), bound by name only here.
SEQUENCE_DATA_TARGET = "datamodules.sequence.SequenceDataModule"
#: Trainer arguments the fit sets itself (from the schedule, or because a per-sequence fit logs and
#: checkpoints nothing); a config that sets one is refused rather than silently overridden.
FIT_OWNED_TRAINER_KEYS = frozenset(
    {
        "max_steps", "max_epochs", "callbacks", "logger", "enable_checkpointing", "enable_progress_bar",
        "enable_model_summary", "num_sanity_val_steps", "default_root_dir",
    }
)  # fmt: skip

#: Keys a preset must give (``name``, ``steps_scale``, ``total_steps``, ``parameter_search``, ``warmup``,
#: ``parameter_rdoq``, ``optimizer`` and ``distortion`` are optional).
PRESET_KEYS = ("lambdas", "phases", "frames_per_step", "eval_every", "keep_best", "parameter_lr_ratio")


class OverfitConfigError(TrainingError, ValueError):
    """A preset or fit setting that cannot drive a fit; the message names the keys to fix.

    A :class:`~nvc_train.training.errors.TrainingError`, so ``evaluate.py`` prints it as one line.
    """


def _plain(value: Any) -> Any:
    """OmegaConf containers to plain Python (configs arrive as DictConfig under Hydra)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


@dataclass(frozen=True)
class StepSearch:
    """The preset's ``parameter_search``: inclusive log2 ranges of the steps tried, and the rounds.

    ``per_octave`` steps are tried in each octave of the ranges: 1 tries the powers of two
    (Cool-Chic's list), 4 every quarter octave, 2**(k/4) (1, 2, 4, 8 or 16, the coder's resolution).
    A list, e.g. ``[1, 4]``, quantizes the fitted network once per grid (search, then the RDOQ) and
    keeps the lowest final RD loss: at lambda 125, two passes, the finer grid lowered it by 11 % on the
    rooftop frame and raised it by 5 % on the dog frame, where the RDOQ did more from the powers of two.
    """

    weight_log2: tuple[int, int]
    bias_log2: tuple[int, int]
    passes: int = 1
    per_octave: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        for name, (low, high) in (("weight_log2", self.weight_log2), ("bias_log2", self.bias_log2)):
            if low > high or low < -40 or high > 16:
                raise ValueError(f"parameter_search.{name} must be [low, high] within [-40, 16], got "
                                 f"{[low, high]}")  # fmt: skip
        if self.passes < 1:
            raise ValueError(f"parameter_search.passes must be >= 1, got {self.passes}")
        if not self.per_octave or any(n not in (1, 2, 4, 8, 16) for n in self.per_octave):
            raise ValueError(
                f"parameter_search.per_octave must be 1, 2, 4, 8 or 16, or a list of them, got "
                f"{list(self.per_octave)}"
            )

    def candidates(self, group: str, per_octave: int) -> list[float]:
        """The log2 steps tried for ``group`` (``<module>.weight`` or ``<module>.bias``), fine to coarse."""
        low, high = self.bias_log2 if group.endswith(".bias") else self.weight_log2
        return [k / per_octave for k in range(low * per_octave, high * per_octave + 1)]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StepSearch:
        unknown = set(config) - {"weight_log2", "bias_log2", "passes", "per_octave"}
        missing = {"weight_log2", "bias_log2"} - set(config)
        if unknown or missing:
            raise ValueError(f"parameter_search: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        low_w, high_w = (int(v) for v in config["weight_log2"])
        low_b, high_b = (int(v) for v in config["bias_log2"])
        grids = config.get("per_octave", 1)
        grids = tuple(int(n) for n in grids) if isinstance(grids, list | tuple) else (int(grids),)
        return cls((low_w, high_w), (low_b, high_b), int(config.get("passes", 1)), grids)


@dataclass(frozen=True)
class FitOptimizer:
    """The preset's ``optimizer``: how the network and the latents are trained.

    ``adam`` (the default when the key is absent): one Adam for everything, torch's betas. ``soap``
    (Cool-Chic's): the network's weights by SOAP (:class:`nvc_train.training.soap.SOAP`) with
    ``network_betas``, ``weight_decay`` and ``precondition_frequency``, the latents by Adam with
    ``latent_betas``.

    Two optional keys, either optimizer: ``gradient_clip`` (0: none) caps the 2-norm of the
    NETWORK's gradient (the latents' is left alone, as Cool-Chic does), in the units of Cool-Chic's
    loss ``D + R / lambda``: ours is ``R + lambda * D``, so the cap applied is ``gradient_clip *
    lambda`` and a preset's number means what Cool-Chic's means at every rate point.
    ``fresh_per_phase``: every phase starts from a new optimizer state (moments and preconditioner
    cleared), as Cool-Chic builds one optimizer per phase.
    """

    name: str
    network_betas: tuple[float, float] = (0.9, 0.999)
    latent_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    precondition_frequency: int = 1
    max_precond_dim: int = 0
    gradient_clip: float = 0.0
    fresh_per_phase: bool = False

    def __post_init__(self) -> None:
        if self.name not in ("adam", "soap"):
            raise ValueError(f"optimizer.name must be adam or soap, got {self.name!r}")
        if self.name == "adam" and (self.network_betas != self.latent_betas or self.max_precond_dim):
            raise ValueError("optimizer adam takes one set of betas and no preconditioner")
        if self.gradient_clip < 0:
            raise ValueError(f"optimizer.gradient_clip must be >= 0, got {self.gradient_clip}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FitOptimizer:
        optional = {"gradient_clip", "fresh_per_phase"}
        keys = {"name", "network_betas", "latent_betas", "weight_decay", "precondition_frequency",
                "max_precond_dim"}  # fmt: skip
        if set(config) - keys - optional or "name" not in config:
            raise ValueError(
                f"optimizer: unknown keys {sorted(set(config) - keys - optional)} (name is required)"
            )
        if config["name"] == "soap" and not keys <= set(config):
            raise ValueError(f"optimizer soap needs every key: missing {sorted(keys - set(config))}")
        options = {k: tuple(float(b) for b in v) if k.endswith("betas") else v for k, v in config.items()}
        if "fresh_per_phase" in options:
            options["fresh_per_phase"] = _flag(options["fresh_per_phase"], "optimizer.fresh_per_phase")
        if "gradient_clip" in options:
            options["gradient_clip"] = float(options["gradient_clip"])
        return cls(**options)


@dataclass(frozen=True)
class ParameterRdoq:
    """The preset's ``parameter_rdoq``: after the fit, each quantized weight tries its neighbouring
    integer multiples of its step, up to ``max_shift`` each way, keeping any that lowers the measured
    RD cost (Cool-Chic's rdoq_model; :func:`nvc_train.training.step_search.refine_parameters`)."""

    max_shift: int

    def __post_init__(self) -> None:
        if not 1 <= self.max_shift <= 64:
            raise ValueError(f"parameter_rdoq.max_shift must be in 1..64, got {self.max_shift}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ParameterRdoq:
        if set(config) != {"max_shift"}:
            raise ValueError(f"parameter_rdoq takes exactly the key max_shift, got {sorted(config)}")
        return cls(int(config["max_shift"]))


@dataclass(frozen=True)
class Warmup:
    """The preset's ``warmup``: several initial networks, the best kept, before the phases (Cool-Chic).

    Stage ``i`` trains ``candidates[i]`` networks for ``steps`` iterations each with ``phase`` (a
    schedule row without name and steps) and keeps the best by the measured RD loss for the next
    stage; the first stage's candidates are the given network and fresh builds of it under other
    seeds. Its iterations count in ``total_steps`` (``sum(candidates) * steps``).

    Optional, as Cool-Chic's warm-up has them: ``noise_log10_lambda: [slope, intercept]`` sets the
    phase's noise to ``slope * log10(lambda) + intercept`` (Cool-Chic's Gaussian noise grows with
    the rate point), and ``optimizer`` overrides fields of the preset's optimizer during the
    warm-up (e.g. faster latent betas).
    """

    candidates: tuple[int, ...]
    steps: int
    phase: Mapping[str, Any] = field(repr=False)
    noise_log10_lambda: tuple[float, float] | None = None
    optimizer: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.candidates or any(n < 1 for n in self.candidates) or self.steps < 1:
            raise ValueError(f"warmup: candidates and steps must be >= 1, got {list(self.candidates)}, "
                             f"{self.steps}")  # fmt: skip
        if list(self.candidates) != sorted(self.candidates, reverse=True):
            raise ValueError(f"warmup: candidates must not grow stage to stage, got {list(self.candidates)}")
        if {"name", "steps"} & set(self.phase):
            raise ValueError("warmup.phase takes no name or steps (warmup.steps gives them)")
        if self.noise_log10_lambda is not None and "noise" in self.phase:
            raise ValueError("warmup: give the phase's noise or noise_log10_lambda, not both")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Warmup:
        unknown = set(config) - {"candidates", "steps", "phase", "noise_log10_lambda", "optimizer"}
        missing = {"candidates", "steps", "phase"} - set(config)
        if unknown or missing:
            raise ValueError(f"warmup: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        noise = config.get("noise_log10_lambda")
        if noise is not None and len(noise) != 2:
            raise ValueError(f"warmup.noise_log10_lambda is [slope, intercept], got {noise}")
        noise = None if noise is None else (float(noise[0]), float(noise[1]))
        candidates = tuple(int(n) for n in config["candidates"])
        return cls(
            candidates,
            int(config["steps"]),
            dict(config["phase"]),
            noise,
            dict(config.get("optimizer") or {}),
        )

    def phase_at(self, lmbda: float) -> dict[str, Any]:
        """The warm-up's schedule row at the rate point ``lmbda`` (its noise set when it follows lambda)."""
        phase = {"name": "warmup", "steps": self.steps, **self.phase}
        if self.noise_log10_lambda is not None:
            slope, intercept = self.noise_log10_lambda
            phase["noise"] = max(0.0, slope * math.log10(lmbda) + intercept)
        return phase

    def fit_optimizer(self, base: FitOptimizer) -> FitOptimizer:
        """The preset's optimizer with the warm-up's overrides (checked like the preset's own)."""
        if not self.optimizer:
            return base
        unknown = set(self.optimizer) - set(FitOptimizer.__dataclass_fields__) - {"name"}
        if unknown or "name" in self.optimizer:
            raise ValueError(f"warmup.optimizer overrides fields of the preset's optimizer (not its name); "
                             f"unknown: {sorted(unknown | ({'name'} & set(self.optimizer)))}")  # fmt: skip
        merged = {**{k: getattr(base, k) for k in FitOptimizer.__dataclass_fields__}, **self.optimizer}
        return FitOptimizer.from_config(merged)

    @property
    def total_steps(self) -> int:
        """Iterations of the whole warm-up (every candidate of every stage)."""
        return sum(self.candidates) * self.steps


#: How a preset's fit runs: ``overfit`` (the framework's phases, :class:`~nvc_train.callbacks.overfit_stages.
#: OverfitStages`) or ``hinerv`` (HiNeRV's published schedule, :mod:`nvc_train.training.hinerv_schedule`).
FIT_METHODS = ("overfit", "hinerv")
#: What the weights are during a HiNeRV phase: float, pruned (masks fixed on entering), or pruned
#: with Quant-Noise.
HINERV_WEIGHTS = ("float", "prune", "noise")


@dataclass(frozen=True)
class HiNeRVPhase:
    """One stage of HiNeRV's schedule (a row of ``phases`` when ``method: hinerv``).

    Every stage starts a fresh Adam (the official trainer builds one optimiser per stage). Its
    learning rate rises linearly from ``warmup_lr`` to ``lr`` over ``warmup_steps``, and follows a
    cosine from ``lr`` to ``min_lr`` over the whole stage (timm's ``CosineLRScheduler`` without
    warm-up prefix, stepped per update, as the official trainer configures it).

    ``weights``: ``float``; ``prune`` (on entering, prune until ``prune_ratio`` of every coded
    parameter is zero, then train the rest); ``noise`` (Quant-Noise at ``quant_bits`` bits with
    ``quant_noise`` of the entries replaced; the masks of the stage before stay).
    """

    name: str
    steps: int
    lr: float
    min_lr: float
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    weights: str = "float"
    prune_ratio: float = 0.0
    quant_bits: int = 6
    quant_noise: float = 0.9

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.min_lr < 0 or self.warmup_lr < 0:
            raise ValueError(f"phase {self.name!r}: steps and lr must be positive, min_lr and warmup_lr >= 0")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(
                f"phase {self.name!r}: warmup_steps must be in [0, steps), got {self.warmup_steps}"
            )
        if self.weights not in HINERV_WEIGHTS:
            raise ValueError(
                f"phase {self.name!r}: weights must be one of {HINERV_WEIGHTS}, got {self.weights!r}"
            )
        if self.weights == "prune" and not 0.0 < self.prune_ratio < 1.0:
            raise ValueError(f"phase {self.name!r}: a prune phase needs prune_ratio in (0, 1)")
        if not 2 <= self.quant_bits <= 16 or not 0.0 <= self.quant_noise <= 1.0:
            raise ValueError(f"phase {self.name!r}: quant_bits must be in 2..16 and quant_noise in [0, 1]")

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> HiNeRVPhase:
        entry = dict(entry)
        unknown = set(entry) - set(cls.__dataclass_fields__)
        missing = {"name", "steps", "lr", "min_lr"} - set(entry)
        if unknown or missing:
            raise ValueError(
                f"phase {entry.get('name')!r}: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
            )
        types = {"steps": int, "warmup_steps": int, "quant_bits": int, "name": str, "weights": str}
        return cls(**{k: types.get(k, float)(v) for k, v in entry.items()})

    def lr_at(self, step: int) -> float:
        """The learning rate of the stage's ``step``-th update (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_lr + step * (self.lr - self.warmup_lr) / self.warmup_steps
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * step / self.steps))


@dataclass(frozen=True)
class HiNeRVOptions:
    """The preset's ``hinerv`` block (``method: hinerv``): how HiNeRV samples and clips.

    ``patch_size`` / ``patches_per_step``: random square patches, each once an epoch (the official
    trainer: 120 x 120, 144 a step at 1080p, i.e. one frame of pixels and 600 steps an epoch for
    600 frames). ``lr_pixel_scaling``: the learning rates are multiplied by the pixels of a step over
    the pixels of a frame (the official ``--auto-lr-scaling``; 1 at 1080p with 144 patches).
    ``gradient_clip``: the gradients' global 2-norm limit. ``prune_weight``: the exponent of the
    alive count in the pruning score ``|w| / alive**prune_weight``.
    """

    patch_size: int
    patches_per_step: int
    lr_pixel_scaling: bool
    gradient_clip: float
    prune_weight: float

    def __post_init__(self) -> None:
        if self.patch_size < 2 or self.patch_size % 2 or self.patches_per_step < 1:
            raise ValueError("hinerv.patch_size must be even and >= 2, patches_per_step >= 1")
        if self.gradient_clip <= 0 or self.prune_weight < 0:
            raise ValueError("hinerv.gradient_clip must be positive and prune_weight >= 0")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HiNeRVOptions:
        keys = set(cls.__dataclass_fields__)
        if set(config) != keys:
            raise ValueError(
                f"hinerv: unknown keys {sorted(set(config) - keys)}, missing {sorted(keys - set(config))}"
            )
        return cls(
            int(config["patch_size"]), int(config["patches_per_step"]),
            _flag(config["lr_pixel_scaling"], "hinerv.lr_pixel_scaling"), float(config["gradient_clip"]),
            float(config["prune_weight"]),
        )  # fmt: skip


@dataclass(frozen=True)
class MotionPretrain:
    """A P frame's motion core first learns to draw a classical flow, as Cool-Chic pulls its motion
    decoder towards RAFT's (:func:`nvc_train.video.motion.estimate_flow` here): ``steps`` iterations
    of Adam at ``lr``, latents soft-rounded twice at ``temperature`` around noise ``noise``, with the
    loss ``R + lambda / rate_scale * MSE(flow, target)`` in pixels (Cool-Chic: D + 20 lambda R)."""

    steps: int
    lr: float
    rate_scale: float
    temperature: float
    noise: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MotionPretrain:
        keys = {"steps", "lr", "rate_scale", "temperature", "noise"}
        if set(config) != keys:
            raise ValueError(f"motion_pretrain needs exactly {sorted(keys)}, got {sorted(config)}")
        pretrain = cls(int(config["steps"]), float(config["lr"]), float(config["rate_scale"]),
                       float(config["temperature"]), float(config["noise"]))  # fmt: skip
        if pretrain.steps < 1 or min(pretrain.lr, pretrain.rate_scale, pretrain.temperature) <= 0:
            raise ValueError(
                f"motion_pretrain: steps, lr, rate_scale and temperature must be positive, got {config}"
            )
        return pretrain


@dataclass(frozen=True)
class OverfitPreset:
    """One ``configs/overfit/<name>.yaml``: the schedule and the loop's numbers of a per-sequence fit.

    Attributes:
        name: the preset's name (the codec's name in tables unless ``codec.name`` is set).
        lambdas: the rate points: rate point i fits ``lambdas[i]`` (D = 6:1:1 MSE on [0, 1] pixels).
        phases: the schedule's rows (:class:`~nvc_train.callbacks.overfit_stages.Phase` fields).
        frames_per_step: frames in one training batch.
        eval_every: steps between keep-best evaluations of the whole sequence.
        keep_best: restore each phase's best hard-quantized RD state at its end.
        parameter_lr_ratio: learning rate of the weights' quantization steps over the phase's.
        steps_scale: stretches every phase and ``eval_every`` (1: as written; 0.02: a smoke test).
            Optional, because its absence has one meaning: the schedule as written.
        total_steps: the fit's effort as a number: the schedule is scaled so that it runs exactly
            this many iterations in all, per SEQUENCE (one Lightning fit codes the whole sequence,
            whatever its frame count), an iteration being one optimiser step over
            ``frames_per_step`` frames. Runs of two codecs compare at equal effort by giving both
            the same N. Phases keep their proportions (largest remainder, each at least one step);
            ``eval_every`` scales with them. Optional (None: ``steps_scale`` decides); setting both
            it and a ``steps_scale`` other than 1 is refused, since they would disagree.
        parameter_search: choose the weights' quantization steps by measured RD cost
            (:mod:`nvc_train.training.step_search`) on entering the phase marked ``step_search``, or
            after the last phase; None: the phases' steps are coded.
        warmup: several initial networks trained briefly, the best kept (:class:`Warmup`); its
            iterations are part of ``total_steps``.
        parameter_rdoq: after the fit, the quantized weights refined one at a time by measured RD
            cost (:class:`ParameterRdoq`); needs weights that end quantized (a ``parameter_search``
            or a phase with ``parameters``). Not iterations: its cost is forward passes.
        optimizer: Adam for everything (absent), or Cool-Chic's SOAP for the network (:class:`FitOptimizer`).
        method: ``overfit`` (absent: the framework's phases) or ``hinerv`` (HiNeRV's published
            schedule, :mod:`nvc_train.training.hinerv_schedule`; needs the ``hinerv`` block,
            :class:`HiNeRVOptions`, and phases of :class:`HiNeRVPhase` rows).
        hinerv: HiNeRV's sampling, clipping and pruning numbers (``method: hinerv`` only).
        rate_point_models: one model config name (``configs/model``) per rate point: rate point i
            fits that architecture (HiNeRV's rate control is its model size, S..XXL) at
            ``lambdas[i]``; absent: every rate point fits the codec's ``model``.
        distortion: the D of the loss, one of ``nvc_train.training.losses.DISTORTIONS`` (absent: ``mse``,
            6:1:1 on YUV; HiNeRV trains with ``l1_msssim_rgb``). Keep-best, the step search and the
            RDOQ measure with it too; PSNR is reported either way.
        inter: the preset of P frames, for a network fitted one frame at a time (Cool-Chic's video,
            ``models.coolchic_video``): every key of a preset but ``lambdas``, which it shares; this
            preset then fits the I frames. Each frame's fit runs its preset's steps.
        motion_pretrain: before a P frame's fit, its motion core learns a classical flow
            (:class:`MotionPretrain`; in the ``inter`` preset).
    """

    name: str | None
    lambdas: tuple[float, ...]
    phases: tuple[Mapping[str, Any], ...] = field(repr=False)
    frames_per_step: int
    eval_every: int
    keep_best: bool
    parameter_lr_ratio: float
    steps_scale: float = 1.0
    total_steps: int | None = None
    parameter_search: StepSearch | None = None
    warmup: Warmup | None = None
    parameter_rdoq: ParameterRdoq | None = None
    optimizer: FitOptimizer = FitOptimizer("adam")
    distortion: str = "mse"
    method: str = "overfit"
    hinerv: HiNeRVOptions | None = None
    rate_point_models: tuple[str, ...] | None = None
    inter: OverfitPreset | None = None
    motion_pretrain: MotionPretrain | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str = "the overfit preset") -> OverfitPreset:
        """Check and type a preset; a missing or unusable key is an :class:`OverfitConfigError`."""
        config = _plain(config) or {}
        if not isinstance(config, Mapping):
            raise OverfitConfigError(f"{where} must be a mapping of keys, got {type(config).__name__}")
        missing = [key for key in PRESET_KEYS if config.get(key) in (None, [], ())]
        if missing:
            raise OverfitConfigError(
                f"{where} lacks {', '.join(missing)} (every number of a fit comes from the preset, "
                "configs/overfit/<model>.yaml; see configs/overfit/c3_tiny.yaml)"
            )
        try:
            preset = cls(
                name=None if config.get("name") is None else str(config["name"]),
                lambdas=tuple(float(v) for v in config["lambdas"]),
                phases=tuple(dict(phase) for phase in config["phases"]),
                frames_per_step=int(config["frames_per_step"]),
                eval_every=int(config["eval_every"]),
                keep_best=_flag(config["keep_best"], f"{where}: keep_best"),
                parameter_lr_ratio=float(config["parameter_lr_ratio"]),
                steps_scale=float(config.get("steps_scale", 1.0)),
                total_steps=None if config.get("total_steps") is None else int(config["total_steps"]),
                parameter_search=_optional(config, "parameter_search", StepSearch.from_config),
                warmup=_optional(config, "warmup", Warmup.from_config),
                parameter_rdoq=_optional(config, "parameter_rdoq", ParameterRdoq.from_config),
                optimizer=_optional(config, "optimizer", FitOptimizer.from_config) or FitOptimizer("adam"),
                distortion=str(config.get("distortion") or "mse"),
                method=str(config.get("method") or "overfit"),
                hinerv=_optional(config, "hinerv", HiNeRVOptions.from_config),
                rate_point_models=_optional(config, "rate_point_models", lambda v: tuple(str(n) for n in v)),
                inter=_optional(
                    config,
                    "inter",
                    lambda v: cls.from_config({"lambdas": config["lambdas"], **_plain(v)}, f"{where}: inter"),
                ),  # fmt: skip
                motion_pretrain=_optional(config, "motion_pretrain", MotionPretrain.from_config),
            )
            if preset.warmup is not None:
                preset.warmup.fit_optimizer(preset.optimizer)  # its overrides checked now, not at the fit
            if preset.rate_point_models is not None and len(preset.rate_point_models) != len(preset.lambdas):
                raise OverfitConfigError(
                    f"{where}: rate_point_models names {len(preset.rate_point_models)} models for "
                    f"{len(preset.lambdas)} lambdas (one model per rate point)"
                )
            if preset.method not in FIT_METHODS:
                raise OverfitConfigError(f"{where}: method must be one of {', '.join(FIT_METHODS)}, got "
                                         f"{preset.method!r}")  # fmt: skip
            if (preset.method == "hinerv") != (preset.hinerv is not None):
                raise OverfitConfigError(f"{where}: method: hinerv and the hinerv block go together")
            if preset.method == "hinerv":
                preset.hinerv_phases()  # every row checked now, not when the fit reaches it
                unused = [key for key in ("parameter_search", "warmup", "parameter_rdoq") if config.get(key)]
                if unused or config.get("optimizer"):
                    raise OverfitConfigError(
                        f"{where}: method hinerv trains with Adam and takes no "
                        f"{', '.join(unused + ['optimizer'] * bool(config.get('optimizer')))}"
                    )
        except OverfitConfigError:
            raise
        except (TypeError, ValueError) as error:
            raise OverfitConfigError(f"{where}: {error}") from None
        if preset.frames_per_step < 1 or preset.eval_every < 1:
            raise OverfitConfigError(f"{where}: frames_per_step and eval_every must be >= 1")
        if preset.parameter_lr_ratio <= 0 or preset.steps_scale <= 0:
            raise OverfitConfigError(f"{where}: parameter_lr_ratio and steps_scale must be positive")
        if preset.total_steps is not None:
            if preset.steps_scale != 1.0:
                raise OverfitConfigError(
                    f"{where} sets both total_steps={preset.total_steps} and steps_scale="
                    f"{preset.steps_scale:g}: give one (total_steps is the effort in iterations)"
                )
            if preset.total_steps - preset.warmup_steps < len(preset.phases):
                raise OverfitConfigError(
                    f"{where}: total_steps={preset.total_steps} minus the warm-up's {preset.warmup_steps} "
                    f"is fewer than its {len(preset.phases)} phases (every phase runs at least one step)"
                )
        if preset.parameter_search is None and any(phase.get("step_search") for phase in preset.phases):
            raise OverfitConfigError(f"{where}: a phase has step_search: true but no parameter_search")
        quantized = preset.parameter_search is not None or any(p.get("parameters") for p in preset.phases)
        if preset.parameter_rdoq is not None and not quantized:
            raise OverfitConfigError(
                f"{where}: parameter_rdoq refines quantized weights, but neither a parameter_search nor a "
                "phase with parameters quantizes them"
            )
        if preset.distortion not in DISTORTIONS:
            raise OverfitConfigError(f"{where}: distortion must be one of {', '.join(DISTORTIONS)}, got "
                                     f"{preset.distortion!r}")  # fmt: skip
        if any(lmbda <= 0 for lmbda in preset.lambdas):
            raise OverfitConfigError(f"{where}: lambdas must be positive, got {list(preset.lambdas)}")
        return preset

    @property
    def scale(self) -> float:
        """The factor applied to every phase: ``total_steps`` over the written total, or ``steps_scale``."""
        if self.total_steps is None:
            return self.steps_scale
        return (self.total_steps - self.warmup_steps) / sum(int(phase["steps"]) for phase in self.phases)

    @property
    def warmup_steps(self) -> int:
        """Iterations of the warm-up (0 without one); part of ``total_steps``, never scaled."""
        return 0 if self.warmup is None else self.warmup.total_steps

    def scaled_phases(self) -> list[dict[str, Any]]:
        """The phases with the steps the fit will run (what the Schedule and the description use).

        With ``total_steps`` the rounded steps are corrected by largest remainder, so they add up
        to exactly ``total_steps`` (plain rounding of each phase can miss the total by a step or
        two, and an effort stated as N iterations must be N). With ``steps_scale`` each phase is
        rounded on its own, as it always was, so schedules measured before keep their steps.
        """
        written = [int(phase["steps"]) for phase in self.phases]
        if self.total_steps is None:
            steps = [max(1, round(n * self.steps_scale)) for n in written]
        else:
            steps = _apportion(written, self.total_steps - self.warmup_steps)
        return [{**phase, "steps": n} for phase, n in zip(self.phases, steps, strict=True)]

    @property
    def scaled_eval_every(self) -> int:
        """Steps between keep-best evaluations, scaled like the phases (at least one)."""
        return max(1, round(self.eval_every * self.scale))

    def hinerv_phases(self) -> list[HiNeRVPhase]:
        """The phases of a ``method: hinerv`` preset as :class:`HiNeRVPhase` rows, steps (and each
        warm-up, in proportion) scaled like every preset's."""
        return _hinerv_rows(self)

    @property
    def fit_steps(self) -> int:
        """Optimiser steps of one fit (one sequence at one rate point), the warm-up included."""
        return self.warmup_steps + sum(int(phase["steps"]) for phase in self.scaled_phases())


def _hinerv_rows(preset: OverfitPreset) -> list[HiNeRVPhase]:
    """The HiNeRV phases with the scaled steps; each warm-up shrinks with its phase."""
    rows = []
    for written, scaled in zip(preset.phases, preset.scaled_phases(), strict=True):
        phase = HiNeRVPhase.from_config(written)
        steps = int(scaled["steps"])
        warmup = min(round(phase.warmup_steps * steps / phase.steps), steps - 1)
        rows.append(replace(phase, steps=steps, warmup_steps=warmup))
    return rows


def _apportion(weights: list[int], total: int) -> list[int]:
    """``total`` split in proportion to ``weights``, every share >= 1, the shares summing to ``total``.

    Hamilton's method (floors, then the largest remainders get one more), so ``total`` equal to
    the written sum gives the written steps back; a share rounded to 0 (a 50-step tail at N=20)
    takes one step from the largest share, since a phase scaled away would change the schedule.
    Needs ``total >= len(weights)`` (checked by the preset).
    """
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    for i, share in enumerate(shares):
        if share == 0:
            shares[shares.index(max(shares))] -= 1
            shares[i] = 1
    return shares


def _optional(config: Mapping[str, Any], key: str, parse: Any) -> Any:
    """``parse(config[key])``, or None when the key is absent or null."""
    return None if config.get(key) is None else parse(config[key])


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise OverfitConfigError(f"{where} must be true or false, got {value!r}")


@dataclass(frozen=True)
class FitSettings:
    """How and where a per-sequence fit runs: the Trainer's hardware settings and the data module.

    Attributes:
        trainer: ``lightning.pytorch.Trainer`` arguments (accelerator, devices, precision, and any
            other the fit does not own, e.g. ``deterministic``); unset ones take
            :data:`FIT_TRAINER_DEFAULTS`.
        data: the data module's ``_target_`` (a class taking ``y, uv, frames_per_step, seed``) and
            any extra keyword arguments for it.
    """

    trainer: Mapping[str, Any] = field(default_factory=lambda: dict(FIT_TRAINER_DEFAULTS))
    data: Mapping[str, Any] = field(default_factory=lambda: {"_target_": SEQUENCE_DATA_TARGET})

    @classmethod
    def from_config(
        cls, trainer: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None
    ) -> FitSettings:
        """Check ``codec.trainer`` / ``codec.data``; None (or an unset key) means the defaults."""
        trainer, data = _plain(trainer) or {}, _plain(data) or {}
        if not isinstance(trainer, Mapping) or not isinstance(data, Mapping):
            raise OverfitConfigError("codec.trainer and codec.data must be mappings of keys")
        owned = sorted(FIT_OWNED_TRAINER_KEYS & set(trainer))
        if owned:
            raise OverfitConfigError(
                f"codec.trainer sets {', '.join(owned)}, which the fit sets itself (the step count "
                "comes from the overfit preset's phases; a per-sequence fit logs and saves nothing)"
            )
        merged = {**FIT_TRAINER_DEFAULTS, **{k: v for k, v in trainer.items() if v is not None}}
        data = {**data, "_target_": data.get("_target_") or SEQUENCE_DATA_TARGET}
        return cls(trainer=merged, data=data)

    def non_default(self) -> dict[str, Any]:
        """The settings that differ from the defaults (a codec's description names these)."""
        out = {f"trainer.{k}": v for k, v in self.trainer.items() if FIT_TRAINER_DEFAULTS.get(k) != v}
        if dict(self.data) != {"_target_": SEQUENCE_DATA_TARGET}:
            out["data"] = dict(self.data)
        return out
