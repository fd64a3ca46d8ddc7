"""Markdown table of evaluated model directories (``ev_t0.json``/``ev_t1.json`` written by
experiments/collapse_sweep.sh or experiments/prior_sweep.sh), with the posterior's scale next
to the KL:

    python experiments/summarize_runs.py work/sweep/* [--out experiments/results/collapse_sweep.md]
    python experiments/summarize_runs.py --script experiments/prior_sweep.sh work/prior/*

Each row's flags and the base flagfile are read from the sweep script (``--script``).

Columns: validation BPD (ELBO, IW K=8), mean KL (nats), active units (Cov_x E_q[z_u] >
0.01), the mean posterior standard deviation, the signal-to-noise ratio
mean_u Var_x(E_q[z_u]) / E_x[sigma_u^2] (information per unit is 0.5 ln(1 + SNR)), and FID,
precision and recall (Kynkaanniemi et al. 2019, k = 3; "—" for evaluations without them),
confident-sample rate and label coverage at temperatures 0 and 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def posterior_scale(model_dir: str, data_dir: str) -> tuple[float, float]:
    """(mean posterior sigma, mean SNR) on the first 500 validation images, mid-bin."""

    from artifacts import model_io
    from artifacts.tfrecord_dataset import make_image_dataset
    from tfp_models import flows

    model, _ = model_io.load_trained_model(model_dir)
    if model.encoder is None or model.config.posterior != "diag":
        return float("nan"), float("nan")
    images = next(iter(make_image_dataset(data_dir, "validation", 500, shuffle=False,
                                          repeat=False)))
    mu, sigma = model.posterior.base(model.encoder(flows.dequantize_images(images)))
    mu, sigma = mu.numpy(), sigma.numpy()
    return float(sigma.mean()), float((mu.var(axis=0) / (sigma ** 2).mean(axis=0)).mean())


def pr(samples: dict) -> str:
    """'precision | recall' cells of an evaluation's samples ('—' where missing)."""
    return " | ".join("—" if samples.get(k) is None else f"{samples[k]:.2f}"
                      for k in ("precision", "recall"))


def sweep_rows(script: str) -> tuple[dict[str, str], str]:
    """({row name: its pipeline.train flags}, the base flagfile) as a sweep script defines
    them (rows ``[name]="flags"``, base ``--flagfile=PATH`` or ``BASE=PATH``)."""
    import re

    with open(script) as f:
        text = f.read()
    base = re.search(r"(?:--flagfile=|^BASE=)(\S+\.cfg)", text, flags=re.M)
    return (dict(re.findall(r'^\s*\[([\w.-]+)\]="([^"]*)"', text, flags=re.M)),
            base.group(1) if base else "?")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+")
    parser.add_argument("--data_dir", default="work/quickstart/data/mnist28")
    parser.add_argument("--out", default=None)
    parser.add_argument("--script", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "collapse_sweep.sh"),
                        help="The sweep script that defines the rows' flags.")
    args = parser.parse_args()
    flags_of, base = sweep_rows(args.script)
    lines = [f"| run | flags (on {base}) | BPD | BPD (IW) | KL nats | AU | "
             "mean sigma_q | SNR | FID T=0 | P T=0 | R T=0 | conf T=0 | cov T=0 | FID T=1 | "
             "P T=1 | R T=1 | conf T=1 | cov T=1 |",
             "|" + "---|" * 18]
    for d in sorted(args.model_dirs):
        try:
            with open(os.path.join(d, "ev_t0.json")) as f:
                t0 = json.load(f)
            with open(os.path.join(d, "ev_t1.json")) as f:
                t1 = json.load(f)
        except (OSError, ValueError):
            print(f"skipping {d}: not evaluated", file=sys.stderr)
            continue
        bpd, lat, s0, s1 = t0.get("bpd", {}), t0.get("latent", {}), t0["samples"], t1["samples"]
        sigma, snr = posterior_scale(d, args.data_dir)
        lines.append(
            f"| {os.path.basename(d)} | `{flags_of.get(os.path.basename(d), '?')}` | "
            f"{bpd.get('bpd', float('nan')):.3f} | "
            f"{bpd.get('bpd_iw', float('nan')):.3f} | {lat.get('kl_mean', float('nan')):.1f} | "
            f"{lat.get('active_units', '—')} | {sigma:.3f} | {snr:.2f} | {s0['fid']:.1f} | "
            f"{pr(s0)} | {s0['confident_rate']:.2f} | {s0['label_coverage']:.2f} | "
            f"{s1['fid']:.1f} | {pr(s1)} | {s1['confident_rate']:.2f} | "
            f"{s1['label_coverage']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
