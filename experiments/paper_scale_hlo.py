"""The XLA cross-check of experiments/paper_scale_flops.py: 2 x the multiply-adds of every
convolution and dot of the step's HLO text (``stage='hlo'``), by network.
"""
from __future__ import annotations

import collections
import math
import re

from paper_scale_graph import network_of

_SHAPE = re.compile(r"\w+\[([\d,]*)\]")
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def _convolution_macs(line: str, rhs: list[int], out: list[int]) -> int:
    """Multiply-adds of one HLO convolution: per output element, the window taps that do
    not fall into holes of an input dilation (``lhs_dilate``, how XLA writes the input
    gradient of a strided convolution and a transposed convolution); taps on padding count,
    as in TF's op statistics."""
    rhs_labels, out_labels = re.search(r"dim_labels=\w+_(\w+)->(\w+)", line).groups()
    window = dict(f.split("=") for f in re.search(r"window=\{([^}]*)\}", line).group(1).split())
    size = _xdims(window["size"])
    ndim = len(size)
    stride = _xdims(window.get("stride", "x".join(["1"] * ndim)))
    lhs_dilate = _xdims(window.get("lhs_dilate", "x".join(["1"] * ndim)))
    rhs_dilate = _xdims(window.get("rhs_dilate", "x".join(["1"] * ndim)))
    pad_low = [int(p.split("_")[0]) for p in window.get("pad", "x".join(["0_0"] * ndim)).split("x")]
    taps = 1
    for d in range(ndim):
        o = out[out_labels.index(str(d))]
        taps *= sum((i * stride[d] + j * rhs_dilate[d] - pad_low[d]) % lhs_dilate[d] == 0
                    for i in range(o) for j in range(size[d]))
    return (out[out_labels.index("b")] * out[out_labels.index("f")]
            * rhs[rhs_labels.index("i")] * taps)


def _xdims(text: str) -> list[int]:
    return [int(d) for d in text.split("x")]


def hlo_flops(hlo: str) -> tuple[collections.Counter, int]:
    """2 x multiply-adds of every convolution and dot of an HLO module's text, by network
    (from the TF op name in each instruction's metadata); and the instruction count."""
    shapes: dict[str, list[int]] = {}
    counted, count = collections.Counter(), 0
    for line in hlo.splitlines():
        m = _DEF.match(line)
        if not m:
            continue
        shapes[m.group(1)] = _dims(m.group(2))
        opcode = re.search(r"\]\S*\s+(convolution|dot)\(", line)
        if not opcode:
            continue
        out = _dims(m.group(2))
        start = opcode.end()
        args = line[start:line.index(")", start)]
        operand_shapes = [_dims(s) for s in _SHAPE.findall(args)]
        if len(operand_shapes) < 2:  # operands printed without shapes: look them up
            names = [a.strip().split()[-1].lstrip("%") for a in args.split(",")]
            operand_shapes = [shapes[n] for n in names]
        lhs, rhs = operand_shapes[0], operand_shapes[1]
        if opcode.group(1) == "convolution":
            macs = _convolution_macs(line, rhs, out)
        else:
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1)
            macs = math.prod(out) * math.prod(lhs[i] for i in _dims(contracting))
        name = _OP_NAME.search(line)
        counted[network_of(name.group(1) if name else "")] += 2 * macs
        count += 1
    return counted, count
