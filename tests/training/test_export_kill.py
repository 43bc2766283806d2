"""The int8 export job killed with SIGKILL half-way (issue #23): nothing half-written is served,
the row says it was lost and can be resumed, and the re-run finishes once, cleanly.

The export runs in a subprocess (training.jobs.run_export_job on the test database, as an rq
work horse would run it) that SIGKILLs itself in the middle of writing a file: the int8
model while quantizing, or the tokenizer after the model was swapped in. A real kill -9 at
the worst moments, not a timing race.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import distillapp.jobs
from distillapp import ml
from tests.annotation.test_labeling import database_url
from tests.training import test_onnx
from tests.training.test_serving import call
from training import jobs, serving
from training.models import ExportJob

pytestmark = pytest.mark.django_db(transaction=True)
TEXTS = test_onnx.TEXTS
artifacts, run = test_onnx.artifacts, test_onnx.run  # a run with its gold evaluation, its own copy
ROOT = Path(__file__).resolve().parents[2]

# Run in the subprocess: write half of the file the export is writing, then SIGKILL itself.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import django
    django.setup()
    from pathlib import Path

    where, job_id = sys.argv[1], int(sys.argv[2])

    def die_half_way(path, data: bytes):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "quantizing":
        import onnxruntime.quantization as q

        def quantize_dynamic(model_input, model_output, **kwargs):
            die_half_way(model_output, Path(model_input).read_bytes())

        q.quantize_dynamic = quantize_dynamic
    else:
        from transformers import PreTrainedTokenizerBase

        real = PreTrainedTokenizerBase.save_pretrained

        def save_pretrained(self, save_directory, **kwargs):
            import tempfile

            with tempfile.TemporaryDirectory() as whole:
                real(self, whole)
                die_half_way(Path(save_directory) / "tokenizer.json", (Path(whole) / "tokenizer.json").read_bytes())

        PreTrainedTokenizerBase.save_pretrained = save_pretrained

    from training import jobs
    jobs.run_export_job(job_id)
    """
)


def export_killed(job: ExportJob, where: str) -> int:
    """Run the job in a subprocess that is SIGKILLed `where`; its pid."""
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "distillapp.settings"}
    process = subprocess.Popen([sys.executable, "-c", KILLER, where, str(job.pk)], cwd=ROOT, env=env)
    assert process.wait(timeout=240) == -signal.SIGKILL
    return process.pid


@pytest.mark.parametrize("where", ["quantizing", "saving the tokenizer"])
def test_a_killed_export_serves_nothing_half_written_and_its_rerun_finishes_once(
    project,
    lead,
    run,
    where,
    queues,
    settings,
):
    settings.SERVING_LOG_FLUSH_SECONDS = 0
    # An earlier export is live: the project serves int8 from the run's export directory.
    first = serving.export_job_start(run=run, user=lead)
    jobs.run_export_job(first.pk)
    before = serving.onnx_measurement(run)
    assert before is not None
    serving.version_promote(run=run, user=lead, threshold=0.0, runtime="onnx-int8")
    _, raw = serving.token_create(project=project, user=lead, name="ci")
    status, body = call(raw, project.slug, {"texts": TEXTS})
    assert status == 200
    served_before = [(p["label"], p["model_version"]) for p in body["predictions"]]

    job = serving.export_job_start(run=run, user=lead)  # "Quantize again"
    pid = export_killed(job, where)

    job.refresh_from_db()
    # The row says what happened: running in a process that is gone, so lost and resumable.
    assert job.status == "running" and job.worker.endswith(f":{pid}")
    assert job.is_stale and job.can_resume
    onnx_dir = serving.onnx_dir_for(run)
    # Nothing half-written is in the served directory: every file there reads whole, and the
    # live version still answers with the model and tokenizer it has.
    json.loads((onnx_dir / "tokenizer.json").read_text())
    json.loads((onnx_dir / "config.json").read_text())
    serving.forget_cached()
    ml._load_onnx.cache_clear()
    status, body = call(raw, project.slug, {"texts": TEXTS})
    assert status == 200 and [(p["label"], p["model_version"]) for p in body["predictions"]] == served_before
    # The old measurement is gone with the export it measured: no promotion on it meanwhile.
    assert serving.onnx_measurement(run) is None

    # Recovery (what every worker sweeps every few seconds) queues the same row again, once.
    queues["short"].empty()
    assert distillapp.jobs.recover(ExportJob) == [job.pk]
    assert distillapp.jobs.recover(ExportJob) == []
    assert [j.args for j in queues["short"].jobs] == [(job.pk,)]
    jobs.run_export_job(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert ExportJob.objects.filter(run=run).count() == 2  # the first export and this one: no copy
    measured = serving.onnx_measurement(run)
    assert measured is not None and {**measured, "may_activate": job.result["may_activate"]} == job.result
    # Exactly one export's files: no scratch directory or half file left by the killed one.
    names = sorted(path.name for path in onnx_dir.iterdir())
    assert ml.ONNX_MODEL_FILE in names and "quantization.json" in names
    assert not [p for p in onnx_dir.iterdir() if p.is_dir() or "fp32" in p.name], names
    assert call(raw, project.slug, {"texts": TEXTS})[0] == 200
