"""The last step of the benchmark scripts: print the report, keep it if asked."""
from __future__ import annotations


def emit_report(lines: list[str], out: str) -> int:
    """Prints the report's lines and, if ``out`` is given, writes them there; returns 0."""
    report = "\n".join(lines)
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report + "\n")
    return 0
