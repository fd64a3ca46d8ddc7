"""How tight is the entropic-GAN surrogate log-likelihood where the exact value is known?

    python experiments/surrogate_tightness.py [--out experiments/results/surrogate_tightness.md]

The source's experiment (Balaji et al., 2019, Gaussian data and a linear generator), here
with the generator exactly right, so the only gap is the surrogate's: data y = A x + n in
R^d, x ~ N(0, I_r), n ~ N(0, (lambda/2) I_d), is exactly the entropic model of the linear
generator G(x) = A x, whose log-density is that of N(0, A A^T + (lambda/2) I) in closed
form. For each d: N real points and M generator draws, the surrogate (mean over the real
points, Sinkhorn coupling of the whole set), the Monte-Carlo smoothed-mixture estimate it
bounds (the best q per point), and the exact mean log-density, all in nats per point. A
bound must be below the exact value at every d; the table says whether it is.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from tfp_models import surrogate


def one_dimension(d: int, rank: int, lam: float, n: int, m: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    a = 2.0 * rng.normal(size=(d, rank))
    cov = a @ a.T + lam / 2 * np.eye(d)
    y = rng.normal(size=(n, rank)) @ a.T + math.sqrt(lam / 2) * rng.normal(size=(n, d))
    g = rng.normal(size=(m, rank)) @ a.T
    exact = -0.5 * (d * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1]
                    + np.einsum("ij,jk,ik->i", y, np.linalg.inv(cov), y))
    start = time.time()
    out = surrogate.surrogate_log_likelihood(y, g, lam, max_iters=5000, tolerance=1e-6)
    seconds = time.time() - start
    mixture = surrogate.smoothed_mixture_log_likelihood(y, g, lam).numpy()
    return {"d": d, "exact": float(exact.mean()),
            "surrogate": float(out["log_likelihood"].numpy().mean()),
            "mixture": float(mixture.mean()), "iterations": out["iterations"],
            "marginal_error": out["marginal_error"], "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", default="5,10,20,30,64")
    p.add_argument("--rank", type=int, default=2, help="latent dimension r of the generator")
    p.add_argument("--entropic_lambda", type=float, default=1.0)
    p.add_argument("--num_real", type=int, default=1000)
    p.add_argument("--num_generated", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = []
    for i, d in enumerate(int(v) for v in args.dims.split(",")):
        row = one_dimension(d, args.rank, args.entropic_lambda, args.num_real,
                            args.num_generated, args.seed + i)
        print(f"d={d}: exact {row['exact']:.2f}, surrogate {row['surrogate']:.2f} "
              f"({row['iterations']} Sinkhorn iterations, {row['seconds']:.0f} s)", flush=True)
        rows.append(row)
    lines = [
        "# Entropic-GAN surrogate log-likelihood vs the exact value (Gaussian data, linear generator)",
        "",
        f"`python experiments/surrogate_tightness.py` (rank r = {args.rank}, lambda = "
        f"{args.entropic_lambda:g}, N = {args.num_real} real points, M = "
        f"{args.num_generated} generator draws, seed {args.seed}). Mean log-density per point "
        "in nats. Source (Balaji et al. 2019, their own covariance): -16.38 vs -17.94 at "
        "d = 5, ..., -203.46 vs -217.52 at d = 64.",
        "",
        "| d | exact | surrogate | gap | below exact | smoothed-mixture estimate | Sinkhorn iterations | max marginal error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['d']} | {r['exact']:.2f} | {r['surrogate']:.2f} | "
                     f"{r['exact'] - r['surrogate']:.2f} | "
                     f"{'yes' if r['surrogate'] < r['exact'] else '**no**'} | "
                     f"{r['mixture']:.2f} | {r['iterations']} | {r['marginal_error']:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
