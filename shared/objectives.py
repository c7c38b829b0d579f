"""Training objectives as data: a registry entry per objective, typed batches, and their losses.

An :class:`ObjectiveSpec` says everything a front end needs to train with one objective: which pool
(data source) it trains on, whether that pool needs step Q-values, its batch type
(:class:`SequenceBatch` or :class:`PreferenceBatch`) and its loss, one of the functions below (pure
functions on log-prob tensors built on :mod:`shared.losses`). Each front end keeps one registry
(:func:`registry`) of its objectives (``stargraph.objectives.SPECS``, ``mathreason.preference.SPECS``),
so adding an objective is one entry there.

Shape suffixes: ``B`` examples (pairs for preference batches), ``T`` token positions of a row, ``L``
label positions (the positions whose next token is scored; how rows map to labels is the front end's:
stargraph scores positions ``P .. T - 1`` of fixed-width rows, mathreason positions ``1 .. T - 1``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Union

import torch

from shared.losses import AdvantageWeightedOutput, PreferenceOutput, SFTOutput, advantage_weighted_loss, per_step_dpo_loss, sft_loss

__all__ = [
    "SequenceBatch",
    "PreferenceBatch",
    "ObjectiveParams",
    "ObjectiveOutput",
    "ObjectiveSpec",
    "nll_objective",
    "awr_objective",
    "chosen_nll_objective",
    "preference_objective",
    "registry",
    "LOSS_TYPES",
]

LOSS_TYPES = ("sigmoid", "ipo", "dpop")
"""``loss_type`` values of :func:`shared.losses.per_step_dpo_loss`."""


class _Batch:
    """Tensor fields (``None`` = absent) that select, move and serialise together."""

    def __len__(self) -> int:
        return int(getattr(self, dataclasses.fields(self)[0].name).shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The present fields by name (e.g. to save the batch; :meth:`from_tensors` rebuilds it)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], device: torch.device | str | None = None):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(tensors) - names
        if unknown:
            raise ValueError(f"{cls.__name__}.from_tensors: unknown fields {sorted(unknown)}")
        return cls(**{k: (v if device is None else v.to(device)) for k, v in tensors.items()})

    def select(self, idx_B: torch.Tensor):
        """The rows ``idx_B`` of every field (the index moves to each field's device)."""
        return type(self)(**{k: v[idx_B.to(v.device)] for k, v in self.tensors().items()})

    def to(self, device: torch.device | str):
        return type(self)(**{k: v.to(device) for k, v in self.tensors().items()})


@dataclasses.dataclass(frozen=True)
class SequenceBatch(_Batch):
    """Sequences scored by a token loss (NLL or advantage-weighted)."""

    tokens_BT: torch.Tensor
    """(B, T) long token rows."""
    mask_BL: torch.Tensor
    """(B, L) bool: the label positions the loss scores."""
    adv_BL: torch.Tensor | None = None
    """(B, L) float token advantages (advantage-weighted regression); None for an NLL."""
    attention_BT: torch.Tensor | None = None
    """(B, T) attention mask of padded rows (None: every position is real)."""


@dataclasses.dataclass(frozen=True)
class PreferenceBatch(_Batch):
    """Chosen and rejected rows of ``B`` pairs with their scored positions and reference log-probs."""

    chosen_BT: torch.Tensor
    """(B, T) long chosen rows."""
    rejected_BT: torch.Tensor
    """(B, T) long rejected rows."""
    chosen_mask_BL: torch.Tensor
    """(B, L) bool: the positions the chosen side scores."""
    rejected_mask_BL: torch.Tensor
    """(B, L) bool: the positions the rejected side scores."""
    ref_chosen_BL: torch.Tensor | None = None
    """(B, L) reference token log-probs of the chosen rows (the preference losses need them)."""
    ref_rejected_BL: torch.Tensor | None = None
    """(B, L) reference token log-probs of the rejected rows."""
    sft_mask_BL: torch.Tensor | None = None
    """(B, L) bool: the chosen positions an SFT term scores (None: ``chosen_mask_BL``)."""
    chosen_attention_BT: torch.Tensor | None = None
    """(B, T) attention mask of the chosen rows (None: every position is real)."""
    rejected_attention_BT: torch.Tensor | None = None
    """(B, T) attention mask of the rejected rows."""


Batch = Union[SequenceBatch, PreferenceBatch]


@dataclasses.dataclass(frozen=True)
class ObjectiveParams:
    """The loss hyperparameters (both front ends' configs carry fields of these names)."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    dpop_lambda: float = 0.0
    sft_weight: float = 0.0
    awr_max_weight: float = 20.0

    @classmethod
    def of(cls, cfg: Any) -> ObjectiveParams:
        """The fields of this name on ``cfg`` (a front end's config)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


class ObjectiveOutput(NamedTuple):
    loss: torch.Tensor
    """() the scalar to back-propagate: the objective's term plus the SFT term when there is one."""
    term: torch.Tensor
    """() the objective's own term (mean over the batch), without the SFT term."""
    out: SFTOutput | PreferenceOutput | AdvantageWeightedOutput
    """The per-example output of the :mod:`shared.losses` function."""
    sft_term: torch.Tensor | None = None
    """() the chosen side's NLL added with weight ``sft_weight`` (preference objectives with ``sft_term``)."""


Logps = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
Loss = Callable[["ObjectiveSpec", Batch, Logps, ObjectiveParams], ObjectiveOutput]


def _check_batch(fn: str, batch: Any, cls: type) -> None:
    if not isinstance(batch, cls):
        raise TypeError(f"{fn}: expected a {cls.__name__}, got {type(batch).__name__}")


def nll_objective(spec: ObjectiveSpec, batch: SequenceBatch, logps_BL: torch.Tensor, params: ObjectiveParams) -> ObjectiveOutput:
    """Mean token NLL of the scored positions, :func:`shared.losses.sft_loss` (SFT, RFT).

    Args:
        logps_BL: ``(B, L)`` policy token log-probs of ``batch``'s label positions.
    """
    _check_batch("nll_objective", batch, SequenceBatch)
    out = sft_loss(logps_BL, batch.mask_BL)
    loss = out.loss_B.mean()
    return ObjectiveOutput(loss, loss, out)


def awr_objective(spec: ObjectiveSpec, batch: SequenceBatch, logps_BL: torch.Tensor, params: ObjectiveParams) -> ObjectiveOutput:
    """Advantage-weighted regression, :func:`shared.losses.advantage_weighted_loss` with weights
    ``min(exp(A / beta), awr_max_weight)`` from ``batch.adv_BL``.

    Args:
        logps_BL: ``(B, L)`` policy token log-probs of ``batch``'s label positions.
    """
    _check_batch("awr_objective", batch, SequenceBatch)
    if batch.adv_BL is None:
        raise ValueError("awr_objective: the batch has no advantages (adv_BL)")
    out = advantage_weighted_loss(logps_BL, batch.adv_BL, batch.mask_BL, beta=params.beta, max_weight=params.awr_max_weight)
    loss = out.loss_B.mean()
    return ObjectiveOutput(loss, loss, out)


def chosen_nll_objective(spec: ObjectiveSpec, batch: PreferenceBatch, logps: tuple[torch.Tensor, torch.Tensor], params: ObjectiveParams) -> ObjectiveOutput:
    """NLL of the chosen sides' scored positions, the negatives unused (a preference objective's control).

    Args:
        logps: ``(pi_chosen_BL, pi_rejected_BL)`` policy token log-probs of both sides.
    """
    _check_batch("chosen_nll_objective", batch, PreferenceBatch)
    pi_c, _ = logps
    out = sft_loss(pi_c, batch.chosen_mask_BL)
    loss = out.loss_B.mean()
    return ObjectiveOutput(loss, loss, out)


def preference_objective(spec: ObjectiveSpec, batch: PreferenceBatch, logps: tuple[torch.Tensor, torch.Tensor], params: ObjectiveParams) -> ObjectiveOutput:
    """Per-step DPO (:func:`shared.losses.per_step_dpo_loss`) with the spec's ``loss_type`` (label
    smoothing applies to the sigmoid loss only), plus ``sft_weight`` times the NLL of the chosen side's
    ``sft_mask_BL`` positions when ``spec.sft_term``.

    Args:
        logps: ``(pi_chosen_BL, pi_rejected_BL)`` policy token log-probs of both sides.
    """
    _check_batch("preference_objective", batch, PreferenceBatch)
    if batch.ref_chosen_BL is None or batch.ref_rejected_BL is None:
        raise ValueError(f"preference_objective ({spec.name}): the batch has no reference log-probs")
    pi_c, pi_r = logps
    out = per_step_dpo_loss(
        pi_c, pi_r, batch.ref_chosen_BL.to(pi_c.dtype), batch.ref_rejected_BL.to(pi_r.dtype), batch.chosen_mask_BL, batch.rejected_mask_BL,
        beta=params.beta, label_smoothing=params.label_smoothing if spec.loss_type == "sigmoid" else 0.0,
        loss_type=spec.loss_type, lam=params.dpop_lambda,
    )
    term = out.loss_B.mean()
    if not spec.sft_term:
        return ObjectiveOutput(term, term, out)
    sft_mask = batch.chosen_mask_BL if batch.sft_mask_BL is None else batch.sft_mask_BL
    s = sft_loss(pi_c, sft_mask).loss_B.mean()
    return ObjectiveOutput(term + params.sft_weight * s, term, out, s)


_BATCH_OF_LOSS = {nll_objective: SequenceBatch, awr_objective: SequenceBatch, chosen_nll_objective: PreferenceBatch, preference_objective: PreferenceBatch}


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """One training objective: what it trains on and how it is scored."""

    name: str
    """The config value that selects it (``objective: <name>``)."""
    pool: str
    """Its data source, in the front end's words, e.g. ``sft`` (the SFT data, no sampled pool), ``correct``
    (the pool's correct samples), ``samples`` (every sample), ``pairs`` (whole-response pairs),
    ``first_pit_pairs`` (pairs cut at a negative's first pit)."""
    needs_q: bool
    """Whether its pool needs step Q-values (first pits, step advantages)."""
    batch_type: type
    """:class:`SequenceBatch` or :class:`PreferenceBatch`."""
    loss: Loss
    """One of :func:`nll_objective`, :func:`awr_objective`, :func:`chosen_nll_objective`, :func:`preference_objective`."""
    loss_type: str | None = None
    """``loss_type`` of :func:`shared.losses.per_step_dpo_loss` (preference objectives only)."""
    sft_term: bool = False
    """Preference objectives: add ``sft_weight`` times the chosen side's NLL."""
    tokens: str = "target"
    """NLL on the SFT data: the target tokens it scores (``target``: all, ``critical``: the critical token only)."""

    def __post_init__(self) -> None:
        want = _BATCH_OF_LOSS.get(self.loss)
        if want is None:
            raise ValueError(f"objective {self.name!r}: unknown loss {self.loss!r}")
        if self.batch_type is not want:
            raise ValueError(f"objective {self.name!r}: {self.loss.__name__} takes a {want.__name__}, not {self.batch_type!r}")
        if (self.loss is preference_objective) != (self.loss_type is not None):
            raise ValueError(f"objective {self.name!r}: loss_type is set exactly for preference_objective")
        if self.loss_type is not None and self.loss_type not in LOSS_TYPES:
            raise ValueError(f"objective {self.name!r}: loss_type {self.loss_type!r} is not one of {LOSS_TYPES}")
        if self.tokens not in ("target", "critical"):
            raise ValueError(f"objective {self.name!r}: tokens must be target or critical, got {self.tokens!r}")

    @property
    def needs_ref(self) -> bool:
        """Whether its loss needs the reference model's log-probs."""
        return self.loss_type is not None

    @property
    def pairs(self) -> bool:
        """Whether it trains on preference pairs."""
        return self.batch_type is PreferenceBatch

    def __call__(self, batch: Batch, logps: Logps, params: ObjectiveParams) -> ObjectiveOutput:
        """The loss of ``batch`` given the policy's log-probs (a pair of tensors for preference batches)."""
        return self.loss(self, batch, logps, params)


def registry(*specs: ObjectiveSpec) -> Mapping[str, ObjectiveSpec]:
    """A read-only name -> spec mapping (names must be unique)."""
    out: dict[str, ObjectiveSpec] = {}
    for s in specs:
        if s.name in out:
            raise ValueError(f"objective {s.name!r} is registered twice")
        out[s.name] = s
    return MappingProxyType(out)
