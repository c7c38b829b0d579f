"""Data efficiency relative to a fitted SFT scaling law (how the paper's "2x" and "8x" are computed).

SFT test error is modelled as a power law in the number of synthetic problems D:
``err(D) = a * D^(-alpha)`` (the paper reports alpha of about 0.15 on GSM8K and 0.05 on MATH).
A method trained on ``size`` problems that reaches error ``e`` is worth ``D_eq = (a / e)^(1 / alpha)``
SFT problems, and its data efficiency is ``D_eq / size``. ``D_eq`` outside the fitted range of sizes
is an extrapolation of the law and is reported as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["PowerLawFit", "DataEfficiency", "fit_power_law", "predict_error", "equivalent_size", "data_efficiency"]


@dataclass(frozen=True)
class PowerLawFit:
    """Least-squares fit of ``log err = log a - alpha log D``."""

    a: float
    alpha: float
    r2: float
    """Coefficient of determination of the fit in log-log space (1 for a perfect fit)."""
    min_size: float
    max_size: float
    n_points: int


@dataclass(frozen=True)
class DataEfficiency:
    ratio: float
    """D_eq / size: how many times more SFT data would give the same error."""
    equivalent_size: float
    """D_eq, the SFT data size whose predicted error equals the observed error."""
    size: float
    error: float
    extrapolated: bool
    """True when D_eq lies outside [min_size, max_size] of the fit."""
    regime: str
    """"interpolation", "extrapolation-above" (beyond the largest fitted size) or "extrapolation-below"."""


def fit_power_law(sizes: Sequence[float], errors: Sequence[float]) -> PowerLawFit:
    """Fit ``err = a * D^(-alpha)`` by least squares on ``(log D, log err)``.

    Args:
        sizes: data sizes D (> 0), at least two distinct values.
        errors: errors at those sizes (> 0), e.g. 1 - accuracy.
    """
    x = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(errors, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fit_power_law: sizes and errors must be 1-d of one length, got {x.shape}, {y.shape}")
    if np.any(~np.isfinite(x)) or np.any(~np.isfinite(y)) or np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("fit_power_law: sizes and errors must be finite and > 0")
    if np.unique(x).size < 2:
        raise ValueError("fit_power_law: need at least two distinct sizes")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(float(math.exp(intercept)), float(-slope), r2, float(x.min()), float(x.max()), int(x.size))


def predict_error(fit: PowerLawFit, size: float | np.ndarray) -> float | np.ndarray:
    """``a * size^(-alpha)`` (a float for a scalar size, an array for an array)."""
    out = fit.a * np.asarray(size, dtype=np.float64) ** (-fit.alpha)
    return float(out) if out.ndim == 0 else out


def equivalent_size(fit: PowerLawFit, error: float) -> float:
    """``D_eq = (a / error)^(1 / alpha)``: the SFT data size predicted to reach ``error``."""
    if not error > 0:
        raise ValueError(f"equivalent_size: error must be > 0, got {error}")
    if abs(fit.alpha) < 1e-9:
        raise ValueError("equivalent_size: the fitted law is flat (alpha = 0): no size maps to a different error")
    log_d = math.log(fit.a / error) / fit.alpha
    return math.inf if log_d > 700 else math.exp(log_d)


def data_efficiency(fit: PowerLawFit, size: float, error: float) -> DataEfficiency:
    """Data efficiency of a method that reached ``error`` with ``size`` problems: ``D_eq / size``.

    A ratio of 8 means SFT would need 8x as much data to match the method (the paper's headline for
    per-step DPO); 2 is the paper's figure for RFT.
    """
    if not size > 0:
        raise ValueError(f"data_efficiency: size must be > 0, got {size}")
    d_eq = equivalent_size(fit, error)
    # A relative tolerance keeps fitted endpoints (recovered through exp/log) inside the range.
    lo, hi = fit.min_size * (1 - 1e-9), fit.max_size * (1 + 1e-9)
    regime = "interpolation" if lo <= d_eq <= hi else ("extrapolation-above" if d_eq > hi else "extrapolation-below")
    return DataEfficiency(d_eq / size, d_eq, float(size), float(error), regime != "interpolation", regime)
