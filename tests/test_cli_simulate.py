"""`voicebot simulate` and `voicebot demo` as ops staff run them: real subprocesses, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PLANS, REPO, fixture_path


def run_cli(args: list[str], tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m voicebot ARGS` with caches in tmp_path."""
    env = {**os.environ, "HOME": str(tmp_path), "VOICEBOT_CACHE_DIR": str(tmp_path / "cache"),
           "VOICEBOT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "voicebot", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=240)


def test_simulate_text_prints_conversation_and_saves_record(tmp_path):
    """Typed answers: the conversation is printed turn by turn and the record lands in the store."""
    db = tmp_path / "calls.db"
    done = run_cli(["simulate", str(PLANS / "pre_delivery.yaml"), "--var", "customer_name=李女士",
                    "--var", "tracking_tail=0042", "--say", "哪个快递", "--say", "放驿站吧", "--json",
                    "--db", str(db)], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "李女士" in out and "caller 哪个快递" in out and "intent what_parcel" in out
    assert "intent station" in out and "outcome: station_consent" in out
    record = json.loads(out[out.index("\n{") + 1:])
    assert record["outcome"] == "station_consent" and record["variables"]["choice"] == "station"
    shown = run_cli(["calls", "show", record["call_id"], "--db", str(db)], tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["outcome"] == "station_consent"
    listed = run_cli(["calls", "list", "--db", str(db)], tmp_path)
    assert record["call_id"] in listed.stdout


@pytest.mark.vosk
def test_simulate_wav_with_real_vosk_and_recording(tmp_path):
    """WAV answers through real Vosk; --record writes both sides of the call as a stereo WAV."""
    import soundfile as sf

    out_wav = tmp_path / "call.wav"
    done = run_cli(["simulate", str(PLANS / "delivery_ko.yaml"), "--var", "customer_name=김",
                    "--wav", str(fixture_path("ko-KR", "no")), "--wav", str(fixture_path("ko-KR", "yes")),
                    "--record", str(out_wav)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "caller 아니요" in done.stdout and "caller 네" in done.stdout
    assert "outcome: station_consent" in done.stdout
    data, rate = sf.read(out_wav)
    assert rate == 8000 and data.shape[1] == 2
    caller, robot = abs(data[:, 0]), abs(data[:, 1])
    assert caller.max() > 0.05 and robot.max() > 0.05
    # The caller speaks while the robot is silent: the two sides do not overlap much.
    assert ((caller > 0.05) & (robot > 0.05)).mean() < 0.01


def test_simulate_interactive_chat(tmp_path):
    """Without steps it is a chat: lines typed on stdin are the caller's answers."""
    done = run_cli(["simulate", str(PLANS / "pre_delivery.yaml"), "--var", "customer_name=王",
                    "--var", "tracking_tail=1"], tmp_path, stdin="什么快递\n/keys 3\n")
    assert done.returncode == 0, done.stderr
    assert "intent what_parcel" in done.stdout and "outcome: locker_consent" in done.stdout


def test_simulate_bad_input_is_a_clear_error(tmp_path):
    """Missing variables, a missing WAV, a broken --var: clear messages, non-zero exit."""
    missing = run_cli(["simulate", str(PLANS / "pre_delivery.yaml"), "--say", "hi"], tmp_path)
    assert missing.returncode != 0 and "customer_name" in missing.stderr
    no_wav = run_cli(["simulate", str(PLANS / "pre_delivery.yaml"), "--wav", "/nonexistent.wav"], tmp_path)
    assert no_wav.returncode == 2 and "no such file" in no_wav.stderr
    bad_var = run_cli(["simulate", str(PLANS / "pre_delivery.yaml"), "--var", "oops"], tmp_path)
    assert bad_var.returncode == 2 and "NAME=VALUE" in bad_var.stderr


def test_demo_call_prints_a_whole_call(tmp_path):
    """`voicebot demo --call` shows one complete conversation."""
    done = run_cli(["demo", "--call"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "robot" in done.stdout and "caller" in done.stdout and "outcome: rescheduled" in done.stdout


def test_demo_runs_a_campaign_and_writes_its_report(tmp_path):
    """The README's main command: a demo campaign on the simulator, its report on screen and on disk."""
    done = run_cli(["demo"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "campaign demo: done" in done.stdout and "36 (36 finished, 0 pending)" in done.stdout
    assert "robot" in done.stdout and "callee" in done.stdout  # one whole conversation is shown
    report = tmp_path / "data" / "demo" / "report"
    summary = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert summary["contacts"] == 36 and summary["finished"] == 36 and sum(summary["outcomes"].values()) == 36
    assert (report / "results.csv").read_text(encoding="utf-8").count("\n") == 37  # header + one per contact
    assert (report / "funnel.svg").read_text(encoding="utf-8").startswith("<svg")


def test_simulate_wav_without_a_model_says_how_to_get_one(tmp_path):
    """Audio in a language with no installed model: a clear error naming `voicebot models fetch`."""
    done = run_cli(["simulate", str(PLANS / "pre_delivery.yaml"), "--var", "customer_name=王", "--var",
                    "tracking_tail=1", "--wav", str(fixture_path("zh-CN", "door"))], tmp_path)
    assert done.returncode == 1
    assert "voicebot models fetch zh-CN" in done.stderr
