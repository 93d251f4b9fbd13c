"""Exact posterior-mean denoisers for Gaussian and two-mode Gaussian-mixture data (test oracles)."""

import numpy as np


class GaussianOracle:
    def __init__(self, schedule, mean: float, std: float):
        self.schedule, self.mean, self.std = schedule, mean, std

    def x0(self, x, level):
        a = self.schedule.alpha(level)[..., None]
        s = self.schedule.sigma(level)[..., None]
        return self.mean + a * self.std**2 / (a * a * self.std**2 + s * s) * (x - a * self.mean)


class MixtureOracle:
    """Two Gaussian modes; the posterior mean weighs each mode's posterior by its responsibility."""

    def __init__(self, schedule, means, std: float, weights):
        self.schedule, self.means, self.std, self.weights = schedule, means, std, weights

    def x0(self, x, level):
        a = self.schedule.alpha(level)[..., None]
        s = self.schedule.sigma(level)[..., None]
        var = a * a * self.std**2 + s * s
        logs, posts = [], []
        for m, w in zip(self.means, self.weights, strict=True):
            logs.append(np.log(w) - 0.5 * (x - a * m) ** 2 / var - 0.5 * np.log(var))
            posts.append(m + a * self.std**2 / var * (x - a * m))
        logs = np.stack(logs)
        resp = np.exp(logs - logs.max(0))
        resp /= resp.sum(0)
        return (resp * np.stack(posts)).sum(0)


def as_parameterization(oracle, schedule, parameterization):
    """A denoiser returning the oracle's exact prediction in any parameterization."""

    def denoiser(x, level, cond=None):
        return schedule.convert(oracle.x0(x, level), x, level, "sample", parameterization)

    return denoiser
