"""The mSPRT of Johari, Koomen, Pekelis and Walsh (Operations Research 70(3), 2022) for an
estimate of variance `v` under a normal mixture of variance `tau2`, written from the paper for
the reference checks (no code shared with abmesh's cli/src/sequential.rs)."""
import math


def ln_lambda(d, v, tau2):
    return 0.5 * math.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))


def p_value(d, v, tau2, theta0=0.0):
    """Always-valid p-value of `theta = theta0`."""
    return min(1.0, math.exp(-ln_lambda(d - theta0, v, tau2)))


def half_width(v, tau2, alpha):
    """Half-width of the (1 - alpha) confidence sequence."""
    return math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
