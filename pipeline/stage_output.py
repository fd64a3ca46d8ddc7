"""What a quickstart stage prints, without the start-up noise of a CPU-only machine.

Every TensorFlow/Beam process prints, before any of its own output, lines that look like
errors but say nothing about the run on a machine without a GPU: absl's pre-init banner,
oneDNN's note, "Could not find cuda drivers", then "failed call to cuInit" (an E line),
Beam's "apitools not found" and "Resource module is not available", and one INFO line per
checkpoint shard. :class:`NoiseFilter` drops exactly those and passes everything else,
as it arrives: progress bars (segments ended by ``\\r``), warnings of the project, errors.

"failed call to cuInit" is dropped only after the same process said it found no CUDA
driver: on a machine with a GPU whose driver fails, it is news and is kept.
"""
from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
import threading
from typing import IO

NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on",
    r"^I\d{4} [\d:. ]+\d+ cpu_feature_guard\.cc:\d+\] ",
    r"^I\d{4} [\d:. ]+\d+ functional_saver\.py:\d+\] Sharding callback duration",
    r"^WARNING:root:apitools not found, and bigquery client libraries are not available",
    r"^W\d{4} [\d:. ]+\d+ __init__\.py:\d+\] apitools not found, and bigquery client",
    r"^WARNING:root:Resource module is not available for current platform",
))
NO_DRIVER = re.compile(r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine")
CUINIT = re.compile(r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


class NoiseFilter:
    """Feed it text as it arrives (:meth:`feed`); it returns what to show. A segment is
    text up to and including ``\\n`` or ``\\r``; an unfinished one is held until its end
    arrives or :meth:`flush`."""

    def __init__(self) -> None:
        self._pending = ""
        self._no_driver = False
        self.dropped = 0  # segments hidden so far

    def _keep(self, segment: str) -> bool:
        line = segment.rstrip("\r\n")
        if NO_DRIVER.search(line):
            self._no_driver = True
            return False
        if any(p.search(line) for p in NOISE) or (self._no_driver and CUINIT.search(line)):
            return False
        return True

    def feed(self, text: str) -> str:
        self._pending += text
        out = []
        for piece in re.split(r"(?<=[\r\n])", self._pending):
            if piece.endswith(("\n", "\r")):
                if self._keep(piece):
                    out.append(piece)
                else:
                    self.dropped += 1
                self._pending = ""
            else:
                self._pending = piece
        return "".join(out)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest if rest and self._keep(rest) else ""


def run_filtered(argv: list[str], *, cwd: str, env: dict, capture: bool = False,
                 sink: IO[str] | None = None) -> tuple[int, str]:
    """Runs ``argv``; its stderr (and its stdout unless ``capture``) goes through a
    :class:`NoiseFilter` to ``sink`` (default sys.stdout) as it arrives. Returns
    (exit code, the captured stdout, '' unless ``capture``)."""
    sink = sink or sys.stdout
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if capture else subprocess.STDOUT)
    captured: list[bytes] = []
    if capture:  # stdout is read whole by a thread; stderr is streamed here
        reader = threading.Thread(target=lambda: captured.append(proc.stdout.read()),
                                  daemon=True)
        reader.start()
    shown = proc.stderr if capture else proc.stdout
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    noise = NoiseFilter()
    while chunk := os.read(shown.fileno(), 65536):
        sink.write(noise.feed(decoder.decode(chunk)))
        sink.flush()
    sink.write(noise.feed(decoder.decode(b"", final=True)) + noise.flush())
    sink.flush()
    code = proc.wait()
    if capture:
        reader.join()
    return code, b"".join(captured).decode("utf-8", errors="replace")
