"""pipeline.stage_output: the quickstart hides the start-up noise of a CPU-only machine and
keeps everything else, streamed as it arrives."""
from __future__ import annotations

import os
import sys

from pipeline.stage_output import NoiseFilter, run_filtered

# Lines as TensorFlow 2.21 / Beam 2.77 print them on this machine (one process's start-up).
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796300675.099965    4436 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.\n",
    "I0000 00:00:1796300675.100799    4436 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "E0000 00:00:1796300679.354621    4436 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    "WARNING:root:apitools not found, and bigquery client libraries are not available despite "
    "the import not raising an ImportError.\n",
    "WARNING:root:Resource module is not available for current platform, memory usage cannot "
    "be fetched.\n",
    "I1203 12:16:13.228008 140689805159296 functional_saver.py:440] Sharding callback "
    "duration: 240 microseconds\n",
    "W1203 13:56:02.277256 140209140771712 __init__.py:32] apitools not found, and bigquery "
    "client libraries are not available despite the import not raising an ImportError.\n",
]
NEWS = [
    "2026/12/03 12:25:19 INFO mlflow.store.db.utils: Creating initial MLflow database tables...\n",
    "train cqf:  39%|###9      | 1181/3000 [08:31<10:20,  2.93step/s, bpd=1.867]\r",
    "/work/beam_jobs/fid.py:541: RuntimeWarning: KID subset size reduced from 1000 to 946\n",
    "E1203 12:00:00.000000 1 some_op.cc:10] a real error\n",
    "pipeline.train: --batch_size=0: expected a positive integer\n",
]


def test_noise_is_dropped_and_news_kept_in_any_chunking():
    text = "".join(NOISE[:2] + NEWS[:2] + NOISE[2:] + NEWS[2:])
    want = "".join(NEWS)
    for size in (1, 7, 100, len(text)):
        noise = NoiseFilter()
        out = "".join(noise.feed(text[i:i + size]) for i in range(0, len(text), size))
        assert out + noise.flush() == want, size
        assert noise.dropped == len(NOISE)


def test_a_cuinit_failure_with_a_driver_present_is_kept():
    noise = NoiseFilter()
    assert noise.feed(NOISE[3]) == NOISE[3]  # no "could not find cuda drivers" before it


def test_progress_segments_pass_through_before_their_line_ends():
    noise = NoiseFilter()
    assert noise.feed("step 1/3\rstep 2/3\rst") == "step 1/3\rstep 2/3\r"
    assert noise.flush() == "st"


def test_run_filtered_streams_a_real_process(tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import sys\n"
                      f"sys.stderr.write({''.join(NOISE)!r})\n"
                      "sys.stderr.write('kept warning\\n')\n"
                      "print('{\"result\": 1}')\n"
                      "sys.exit(3)\n")
    log = tmp_path / "shown.txt"
    with open(log, "w") as sink:
        code, stdout = run_filtered([sys.executable, str(script)], cwd=str(tmp_path),
                                    env=dict(os.environ), capture=True, sink=sink)
    assert code == 3 and stdout == '{"result": 1}\n'
    assert log.read_text() == "kept warning\n"
    with open(log, "w") as sink:
        code, stdout = run_filtered([sys.executable, str(script)], cwd=str(tmp_path),
                                    env=dict(os.environ), sink=sink)
    assert code == 3 and stdout == ""
    assert sorted(log.read_text().splitlines()) == ['kept warning', '{"result": 1}']
