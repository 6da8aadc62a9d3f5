"""benchmarks/dag_timeline.py: a Snakemake log's jobs, the run's packing and job-seconds by model."""

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from benchmarks import dag_timeline

LOG = """\
Building DAG of jobs...
Using shell: /usr/bin/bash
Provided cores: 2
[Sun Dec  6 14:00:00 2026]
localrule download:
    output: data/raw/x
    jobid: 2
    wildcards: source=diffrec-ml-1m-clean
    resources: tmpdir=/tmp
[Sun Dec  6 14:00:10 2026]
Finished jobid: 2 (Rule: download)
1 of 4 steps (25%) done
[Sun Dec  6 14:00:10 2026]
localrule train:
    jobid: 7
    wildcards: split=ml-1m_clean, model=mf, seed=2
    resources: tmpdir=/tmp, gpu=0
[Sun Dec  6 14:01:50 2026]
Finished jobid: 7 (Rule: train)
[Sun Dec  6 14:01:50 2026]
localrule tune:
    jobid: 8
    wildcards: split=ml-1m_clean, model=mf
    threads: 2
[Sun Dec  6 14:02:10 2026]
Finished jobid: 8 (Rule: tune)
[Sun Dec  6 14:02:10 2026]
rule train:
    jobid: 9
    wildcards: split=ml-1m_noisy, model=hdrm, seed=1
[Sun Dec  6 14:02:40 2026]
Complete log(s): x
"""


def test_parse_reads_every_job_with_its_rule_wildcards_threads_and_times():
    jobs = dag_timeline.parse(LOG.splitlines())
    assert [(j.rule, j.group, j.threads, j.seconds, j.finished) for j in jobs] == [
        ("download", "download", 1, 10.0, True),
        ("train", "mf", 1, 100.0, True),
        ("tune", "mf", 2, 20.0, True),
        ("train", "hdrm", 1, 30.0, False),  # still running: counted up to the log's last stamp
    ]
    assert jobs[1].wildcards == {"split": "ml-1m_clean", "model": "mf", "seed": "2"}


def test_report_prints_packing_and_job_seconds_by_model(tmp_path):
    jobs = dag_timeline.parse(LOG.splitlines())
    # the train job's timing file, written while it ran; a tune point's written before the run
    # (an earlier run's) is not this run's
    train = tmp_path / "ml-1m_clean_mf_seed2.json"
    train.write_text(json.dumps({"seconds_per_epoch": 0.5}))
    stale = tmp_path / "ml-1m_clean_mf_tune_point0.json"
    stale.write_text(json.dumps({"seconds_per_epoch": 9.0}))
    os.utime(train, (t := datetime(2026, 12, 6, 14, 1, 0).timestamp(), t))
    os.utime(stale, (t := datetime(2026, 12, 6, 13, 0, 0).timestamp(), t))
    out = dag_timeline.report([jobs], cores=2, timing=tmp_path, alone={"mf": 0.25})
    # wall 14:00:00-14:02:40 = 160 s; job-seconds 10 + 100 + 20 + 30 = 160; core-seconds 10 + 100 + 2 x 20 + 30 = 180
    assert "- wall 160 s (2.7 min); 160 job-seconds, 180 core-seconds" in out
    assert "- packing: 180 / (2 x 160) = 56.2 % of the cores busy; 140 core-seconds idle" in out
    assert "| mf | 2 | 120 | 75.0 % | 0.50 | 1 | 0.25 | 2.00 |" in out
    assert "| hdrm | 1 | 30 | 18.8 % | – | 0 | – | – |" in out
    assert "1 job(s) still running when the log ends" in out
    assert "job-seconds-weighted mean of in the run / alone: 2.00 over 1 models" in out


def test_a_resumed_run_adds_up_its_segments_walls():
    jobs = dag_timeline.parse(LOG.splitlines())
    later = [job._replace(start=job.start.replace(hour=16), finish=job.finish.replace(hour=16)) for job in jobs[:2]]
    out = dag_timeline.report([jobs, later], cores=2, timing=Path("/nonexistent"))
    # 160 s, then 16:00:00-16:01:50 = 110 s; job-seconds 160 + 110
    assert "- 6 jobs on 2 cores in 2 segments" in out
    assert "- wall 270 s (4.5 min); 270 job-seconds, 290 core-seconds" in out


def test_main_refuses_a_missing_log_and_bad_cores(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no such log"):
        dag_timeline.main([str(tmp_path / "none.log")])
    with pytest.raises(SystemExit):
        dag_timeline.main([str(tmp_path / "none.log"), "--cores", "0"])
    assert "--cores must be at least 1" in capsys.readouterr().err


def test_job_seconds_names_each_finished_job_as_the_plan_does(tmp_path):
    """--job-seconds: the finished train / tune jobs by pipeline.plan.job_key (no download, no
    job still running); a file already there keeps the jobs these logs lack."""
    from pipeline.plan import job_key, read_job_seconds

    jobs = dag_timeline.parse(LOG.splitlines())
    assert dag_timeline.job_seconds(jobs) == {job_key("train", "ml-1m_clean", "mf", 2): 100, job_key("tune", "ml-1m_clean", "mf"): 20}
    out = tmp_path / "job_seconds.json"
    out.write_text(json.dumps({"train/ml-1m_clean/mf/2": 7, "embed/ml-1m_clean/hgcf": 3}))
    dag_timeline.write_job_seconds(out, jobs)
    assert read_job_seconds(out) == {"train/ml-1m_clean/mf/2": 100.0, "tune/ml-1m_clean/mf": 20.0, "embed/ml-1m_clean/hgcf": 3.0}
