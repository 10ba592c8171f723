"""The few-step flow-matching samplers of the two LongLive families.

LongLive 1.0 ("flow_renoise"):

The trained step list (e.g. [1000, 750, 500, 250]) is warped by the shift used in training,
sigma' = shift * sigma / (1 + (shift - 1) * sigma), so the timesteps actually fed to the DiT are
fractional ([1000, 937.5, 833.33.., 625] for shift 5). They must stay fractional: rounding them
changes the output. Fresh noise re-noises the x0 prediction between steps (`VideoGenerator`).

LongLive 2.0 ("flow_unipc"): `FlowUniPC`, flow UniPC multistep over 4 steps at timesteps
[999, 937, 833, 624] (shift 5), made anew for every chunk; no noise inside the loop.
"""

from __future__ import annotations

import math

import torch

from .config import StreamConfig


def shift_sigma(sigma: float, shift: float) -> float:
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def denoising_sigmas(stream: StreamConfig) -> list[float]:
    """Warped noise levels in (0, 1], one per denoising step, highest first."""
    n = float(stream.num_train_timesteps)
    return [shift_sigma(t / n, stream.shift) for t in stream.denoising_steps]


def denoising_timesteps(stream: StreamConfig) -> list[float]:
    """The timesteps fed to the DiT's time embedding (sigma * num_train_timesteps)."""
    return [s * stream.num_train_timesteps for s in denoising_sigmas(stream)]


# --- LongLive 2.0: flow UniPC multistep ---------------------------------------------------------
def unipc_schedule(
    steps: int, shift: float, num_train_timesteps: int = 1000
) -> tuple[list[int], list[float]]:
    """The timesteps fed to the DiT and the noise levels of UniPC's steps, plus the final 0.

    Noise levels are spaced evenly from 1 - 1/N down to 0 (N = num_train_timesteps), the last
    one dropped, then shifted; the DiT is fed them x N truncated to integers ([999, 937, 833, 624]
    for 4 steps, shift 5) while the solver keeps the unrounded levels in float32.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    top = 1.0 - 1.0 / num_train_timesteps
    raw = [top - top * i / steps for i in range(steps)]
    sigmas = [shift_sigma(s, shift) for s in raw]
    timesteps = [int(s * num_train_timesteps) for s in sigmas]
    as_f32 = [float(torch.tensor(s, dtype=torch.float32)) for s in sigmas]  # the solver's precision
    return timesteps, [*as_f32, 0.0]


class FlowUniPC:
    """Flow UniPC multistep (UniPC with the B(h) = e^h - 1 variant "bh2", data (x0) prediction,
    predictor order 2, a corrector after every step but the first, lower order at the end), as
    LongLive 2.0 samples a chunk. Made once per chunk; no noise is drawn inside.

    `step(v, x)` takes the DiT's flow prediction v at the current sample x (at `timesteps[i]`)
    and returns the sample for the next step (after the last step: the clean latents).
    With sigma the noise level, alpha = 1 - sigma and lambda = log(alpha / sigma):
      x0 = x - sigma * v (the model's data prediction)
      corrector (UniC):  x <- the step from the previous sample redone with the new x0 as well
      predictor (UniP):  x_next = sigma_t / sigma_s * x + alpha_t (1 - e^-h) x0 - alpha_t B(h) (rho . D)
    where h = lambda_t - lambda_s and D holds the scaled differences of earlier x0 predictions.
    """

    def __init__(self, steps: int = 4, shift: float = 5.0, num_train_timesteps: int = 1000, order: int = 2):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.timesteps, self.sigmas = unipc_schedule(steps, shift, num_train_timesteps)
        self.order = order
        self.lambdas = [_log_snr(s) for s in self.sigmas]
        self._index = 0
        self._x0s: list[torch.Tensor] = []  # data predictions, newest last (at most `order`)
        self._last_sample: torch.Tensor | None = None
        self._last_order = 0

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def step(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        i = self._index
        if i >= self.steps:
            raise RuntimeError(f"all {self.steps} steps are done")
        x0 = x - self.sigmas[i] * v
        if i > 0 and self._last_sample is not None:
            x = self._correct(x0, self._last_sample, i)
        self._x0s = [*self._x0s, x0][-self.order :]
        order = min(self.order, self.steps - i, i + 1)  # lower order first and at the end
        self._last_order = order
        self._last_sample = x
        out = self._predict(x, i, order)
        self._index += 1
        return out

    def _b_terms(self, h: float, order: int) -> tuple[float, float, list[float]]:
        """(h_phi_1, B(h), b) for the data-prediction update of the given order."""
        hh = -h
        h_phi_1 = math.expm1(hh)
        b_h = h_phi_1  # bh2
        h_phi_k = h_phi_1 / hh - 1.0
        factorial = 1
        b = []
        for k in range(1, order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return h_phi_1, b_h, b

    def _predict(self, x: torch.Tensor, i: int, order: int) -> torch.Tensor:
        s, t = i, i + 1
        m0 = self._x0s[-1]
        sig_s, sig_t = self.sigmas[s], self.sigmas[t]
        alpha_t = 1.0 - sig_t
        if sig_t == 0.0:  # lambda_t = inf: the step lands on the data prediction itself
            return m0.clone()
        h = self.lambdas[t] - self.lambdas[s]
        h_phi_1, b_h, _ = self._b_terms(h, order)
        out = (sig_t / sig_s) * x - (alpha_t * h_phi_1) * m0
        if order == 2:
            rk = (self.lambdas[s - 1] - self.lambdas[s]) / h
            d1 = (self._x0s[-2] - m0) / rk
            out = out - (alpha_t * b_h * 0.5) * d1  # rho_p = 1/2 for order 2
        return out

    def _correct(self, x0_new: torch.Tensor, last_sample: torch.Tensor, i: int) -> torch.Tensor:
        s, t = i - 1, i
        order = self._last_order
        m0 = self._x0s[-1]
        sig_s, sig_t = self.sigmas[s], self.sigmas[t]
        alpha_t = 1.0 - sig_t
        h = self.lambdas[t] - self.lambdas[s]
        h_phi_1, b_h, b = self._b_terms(h, order)
        out = (sig_t / sig_s) * last_sample - (alpha_t * h_phi_1) * m0
        d1_t = x0_new - m0
        if order == 1:
            return out - (alpha_t * b_h * 0.5) * d1_t
        rk = (self.lambdas[s - 1] - self.lambdas[s]) / h
        # rho solves [[1, 1], [rk, 1]] rho = b
        rho_last = (b[1] - rk * b[0]) / (1.0 - rk)
        rho_first = b[0] - rho_last
        d1 = (self._x0s[-2] - m0) / rk
        return out - (alpha_t * b_h) * (rho_first * d1 + rho_last * d1_t)


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha) - log(sigma) with alpha = 1 - sigma (inf at sigma = 0)."""
    if sigma <= 0.0:
        return math.inf
    return math.log(1.0 - sigma) - math.log(sigma)
