"""Direct step-by-step evaluations of the paper's block algorithms (corrected), in mpmath.

These are the *independent* references the derived and compiled maps are
tested against: Algorithm 1 (post-LN), Algorithm 2 (pre-LN) with line 12
corrected (q1 = sigma_w2 q_LN + sigma_b2, as in Algorithm 1 line 10),
Algorithm 3 (gain-controlled post-LN) with line 10 corrected the same way,
and the gain-controlled pre-LN block described in section 3. ReLU MLP with
the arc-cosine kernel f(rho) of B.6.2; T -> oo (Y2 = max(0, 1 - beta_c/beta)).

Arithmetic is mpmath at 40 digits, so the reference is exact far below the
1e-12 the compiled float64 maps are held to, also where tokens have all but
collapsed (1 - rho ~ 1e-11), where a float64 sqrt(1 - rho^2) loses five digits.

:func:`kernel_reference` is the reference for the Gaussian kernels of the
activations (B.6.2, eqs. 35-37): mpmath quadrature at any precision, with the
inner integral in closed form where a textbook identity gives it.
"""

import mpmath as math

from derive import kernel_quadrature
from derive.kernels import activation_function

math.mp.dps = 40


def relu_f(rho):
    """Cho & Saul's f(rho) (B.6.2): E[relu(u) relu(v)] = (q/2) f(rho)."""
    rho = min(math.mpf(1), max(math.mpf(-1), rho))
    return (math.sqrt(max(0, 1 - rho * rho)) + rho * (math.pi - math.acos(rho))) / math.pi


def y2(beta, q, p):
    """Eq. (4)."""
    if q - p <= 0:
        return 0.0
    beta_c = math.sqrt(2.0 / (q * (q - p)))
    return max(0.0, 1.0 - beta_c / beta)


def mlp_residual(q, p, sigma_w2, sigma_b2, alpha_mlp, q_in, p_in):
    """Alg. 1 lines 10-12 on a normalised input (q, p), residual added to (q_in, p_in)."""
    q1, p1 = sigma_w2 * q + sigma_b2, sigma_w2 * p + sigma_b2
    q2, p2 = sigma_w2 / 2 * q1 + sigma_b2, sigma_w2 / 2 * relu_f(p1 / q1) * q1 + sigma_b2
    return q2 + alpha_mlp**2 * q_in, p2 + alpha_mlp**2 * p_in


def post_ln(q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2):
    """Algorithm 1."""
    Y = y2(beta, q, p)
    q, p = sigma_v2 * (p + (q - p) * Y) + q * alpha_sa**2, p * (sigma_v2 + alpha_sa**2)
    p, q = p / q, 1.0
    q, p = mlp_residual(q, p, sigma_w2, sigma_b2, alpha_mlp, q, p)
    return 1.0, p / q


def pre_ln(q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2):
    """Algorithm 2, line 12 corrected."""
    p_ln, q_ln = p / q, 1.0
    Y = y2(beta, q_ln, p_ln)
    q, p = sigma_v2 * (p_ln + (q_ln - p_ln) * Y) + q * alpha_sa**2, sigma_v2 * p_ln + alpha_sa**2 * p
    p_ln, q_ln = p / q, 1.0
    return mlp_residual(q_ln, p_ln, sigma_w2, sigma_b2, alpha_mlp, q, p)


def gain_post_ln(q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2):
    """Algorithm 3, line 10 corrected."""
    Y = y2(beta, q, p)
    q, p = sigma_v2 * (q - p) * Y + alpha_sa**2 * q, alpha_sa**2 * p
    p, q = p / q, 1.0
    q, p = mlp_residual(q, p, sigma_w2, sigma_b2, alpha_mlp, q, p)
    return 1.0, p / q


def gain_pre_ln(q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2):
    """Gain-controlled attention in the pre-LN block (section 3, Fig. 2)."""
    p_ln, q_ln = p / q, 1.0
    Y = y2(beta, q_ln, p_ln)
    q, p = sigma_v2 * (q_ln - p_ln) * Y + alpha_sa**2 * q, alpha_sa**2 * p
    p_ln, q_ln = p / q, 1.0
    return mlp_residual(q_ln, p_ln, sigma_w2, sigma_b2, alpha_mlp, q, p)


ALGORITHMS = {"post-ln": post_ln, "pre-ln": pre_ln, "gain-post-ln": gain_post_ln, "gain-pre-ln": gain_pre_ln}


def profile(arch, depth, beta, rho0=0.0, alpha_sa=1.0, alpha_mlp=1.0, sigma_v2=1.0, sigma_w2=2.0, sigma_b2=0.0):
    """rho before block 1 and after each block, one point at a time."""
    q, p = math.mpf(1), math.mpf(rho0)
    beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2 = map(
        math.mpf, (beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2))
    out = [float(p / q)]
    for _ in range(depth):
        q, p = ALGORITHMS[arch](q, p, beta, alpha_sa, alpha_mlp, sigma_v2, sigma_w2, sigma_b2)
        p = min(max(p, -q), q)
        out.append(float(p / q))
    return out


# --- Gaussian kernels K(q, c) = E[phi(u) phi(v)] of the activations (B.6.2) ---


def _relu_conditional_mean(m, s):
    """E relu(m + s z) = m Phi(m/s) + s phi(m/s): the mean of a rectified Gaussian."""
    if s == 0:
        return max(m, math.mpf(0))
    return m * math.ncdf(m / s) + s * math.npdf(m / s)


def _erf_conditional_mean(m, s):
    """E erf(m + s z) = erf(m / sqrt(1 + 2 s^2)) (Williams 1997)."""
    return math.erf(m / math.sqrt(1 + 2 * s**2))


def _gelu_conditional_mean(m, s):
    """E[(m + s z) Phi(m + s z)] = m Phi(m/r) + (s^2/r) phi(m/r), r = sqrt(1 + s^2)."""
    r = math.sqrt(1 + s**2)
    return m * math.ncdf(m / r) + s**2 / r * math.npdf(m / r)


def _identity_conditional_mean(m, s):
    """E[m + s z] = m."""
    return m


#: E[phi(m + s z)], z ~ N(0, 1), in closed form: the inner integral of :func:`kernel_reference`
#: (standard 1-D Gaussian identities, each tested against direct quadrature).
CONDITIONAL_MEANS = {
    "relu": _relu_conditional_mean,
    "erf": _erf_conditional_mean,
    "gelu": _gelu_conditional_mean,
    "identity": _identity_conditional_mean,
}


def kernel_reference(activation, q, c, dps=30, method="auto"):
    """K_phi(q, c) = E[phi(u) phi(v)], Var u = Var v = q, Cov = c, at ``dps`` digits (an mpmath ``mpf``).

    phi is derive's definition (:func:`derive.kernels.activation_function`);
    the integral is done by :func:`derive.kernel_quadrature.gaussian_kernel`,
    independently of the SymPy derivation of the closed forms.
    ``method="conditional"``: quadrature over u only, E[phi(v) | u] from
    :data:`CONDITIONAL_MEANS`; ``"quadrature"``: the full 2-D integral (any
    activation); ``"auto"``: the first available.
    """
    if method not in ("auto", "conditional", "quadrature"):
        raise ValueError(f"method must be 'auto', 'conditional' or 'quadrature'; got {method!r}")
    phi = activation_function(activation)
    if method == "conditional" and activation not in CONDITIONAL_MEANS:
        raise ValueError(f"method='conditional' needs a known E[phi(m + s z)]; {activation!r} has none")
    conditional = None if method == "quadrature" else CONDITIONAL_MEANS.get(activation)
    return kernel_quadrature.gaussian_kernel(phi, q, c, dps, conditional_mean=conditional)
