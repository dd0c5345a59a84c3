"""samples/gpu_check.py: the dry run (the GPU check's code paths at tiny sizes on the CPU) and its report.

The dry run runs once per module (about a minute on 2 cores); the tests read its report. A second, short
run checks that a hung part is killed at its limit while the next part still runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_sample

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "samples" / "gpu_check.py"


gc = load_sample("gpu_check")


def _native_available() -> bool:
    """Whether the dry run's process can import ``lipforce_sdk._kvattn``: it imports ``lipforce_sdk``
    from the source tree (PYTHONPATH=<repo>), which holds the extension only after an in-place or
    editable build; a plain ``pip install .`` puts it in site-packages, where the dry run does not look."""
    code = "from lipforce_sdk import kvattn; kvattn.native_module()"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=str(REPO), capture_output=True).returncode == 0


def _run(tmp_path_factory, *extra, env=None):
    out = tmp_path_factory.mktemp("gpu_check_out")
    build = tmp_path_factory.mktemp("gpu_check_build")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--build-dir", str(build),
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    wall = time.perf_counter() - t0
    path = out / "report.json"
    report = json.loads(path.read_text()) if path.exists() else None
    return proc, out, report, wall


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return _run(tmp_path_factory)


def _parts(report) -> dict:
    return {p["name"]: p for p in report["parts"]}


def _explain(proc) -> str:
    return f"exit {proc.returncode}\nstdout tail:\n{proc.stdout[-4000:]}\nstderr tail:\n{proc.stderr[-2000:]}"


@pytest.mark.slow
def test_dry_run_passes_and_writes_three_small_files(dry_run):
    proc, out, report, wall = dry_run
    assert proc.returncode == 0, _explain(proc)
    assert report is not None, _explain(proc)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(gc.REPORT_FILES), files
    # what comes back from the device machine: at most 8 files, plain names, small
    for f in files:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", f), f
        assert (out / f).stat().st_size < 2**20, f"{f} is {(out / f).stat().st_size} bytes"
    assert report["mode"] == "dry-run"
    assert report["wall_s"] < 240, f"the dry run took {report['wall_s']} s (it must stay well under a few minutes)"


@pytest.mark.slow
def test_every_part_is_reported_in_order_with_status_time_and_reason(dry_run):
    proc, _, report, _ = dry_run
    assert report is not None, _explain(proc)
    assert [p["name"] for p in report["parts"]] == list(gc.PART_NAMES)
    specs = {s.name: s for s in gc.PARTS}
    for p in report["parts"]:
        assert p["status"] in gc.STATUSES, p
        assert isinstance(p["wall_s"], float) and p["wall_s"] >= 0, p
        assert 0 < p["limit_s"] <= specs[p["name"]].dry_limit_s, p
        assert p["wall_s"] <= p["limit_s"] + 5, p
        assert f"--parts {p['name']}" in p["command"] and "--dry-run" in p["command"], p["command"]
        if p["status"] != "pass":
            assert p["reason"].strip(), f"{p['name']} is {p['status']} without a reason"
    parts = _parts(report)
    expected = {
        "env": "pass",
        "build": "pass" if gc.find_tool("cmake") else "skip",
        "kernels": "pass" if _native_available() else "skip",
        "kernel_timing": "pass",
        "stream": "pass",
        "baseline": "pass",
        "sanitizer": "skip",
        "profile": "pass",
    }
    got = {name: parts[name]["status"] for name in expected}
    assert got == expected, {n: (parts[n]["status"], parts[n]["reason"]) for n in expected}
    assert "CUDA" in parts["sanitizer"]["reason"]


@pytest.mark.slow
def test_report_json_keys_and_summary_agree_with_the_parts(dry_run):
    proc, _, report, _ = dry_run
    assert report is not None, _explain(proc)
    assert set(report) >= {"schema", "mode", "command", "device_command", "started", "wall_s", "budget_s", "machine",
                           "options", "parts", "summary", "notes"}
    assert report["device_command"] == gc.DEVICE_COMMAND
    assert report["machine"]["python"] and report["machine"]["torch"]
    assert any("TensorRT" in n and "SM90" in n for n in report["notes"])
    parts = _parts(report)
    variants = {v["variant"]: v for v in parts["stream"]["results"]["variants"]}
    eager = variants["eager"]
    clips = parts["baseline"]["results"]["clips"]
    s = report["summary"]
    assert s["paper"]["ratio"] == 17.6 and s["paper"]["fps"] == 31.0
    assert s["stream_eager"]["fps"] == pytest.approx(eager["fps"])
    assert len(s["ratios"]) == len(clips) >= 1
    for r, c in zip(s["ratios"], clips):
        assert r["eager"] == pytest.approx(eager["fps"] / c["fps"]), (r, c)


@pytest.mark.slow
def test_every_table_carries_its_context_and_is_rectangular(dry_run):
    proc, _, report, _ = dry_run
    assert report is not None, _explain(proc)
    seen = 0
    for p in report["parts"]:
        for t in p["tables"]:
            seen += 1
            assert {"gpu", "precision", "shapes", "command", "wall_s"} <= set(t["context"]), (p["name"], t["title"])
            assert t["context"]["command"].startswith("python samples/gpu_check.py --parts"), t["context"]
            assert t["rows"], (p["name"], t["title"])
            for row in t["rows"]:
                assert len(row) == len(t["columns"]), (p["name"], t["title"], row)
    assert seen >= (6 if _native_available() else 5)  # the kernels' table needs the extension


@pytest.mark.slow
def test_sizes_come_from_the_preset_config(dry_run):
    """Nothing of tiny's sizes is hard-coded: the preset cases, the timing shapes and the stream follow config.py."""
    from lipforce_sdk.config import from_name

    proc, _, report, _ = dry_run
    assert report is not None, _explain(proc)
    cfg = from_name(report["options"]["preset"])
    parts = _parts(report)
    gh, gw = cfg.grid_hw
    if parts["kernels"]["status"] == "pass":
        cases = {c["case"]: c for c in parts["kernels"]["results"]["cases"]}
        for b in (1, 2):
            c = cases[f"{cfg.name} preset B{b}"]
            assert c["shape"].startswith(f"D{cfg.dit.head_dim}-B{b}-H{cfg.dit.num_heads}-g{gh}x{gw}-"
                                         f"C{cfg.stream.chunk_frames}-M{cfg.num_slots}-"), c["shape"]
            assert c["ok"] and c["cache_exact"], c
        assert all(c["ok"] for c in cases.values()), [c for c in cases.values() if not c["ok"]]
    timing = parts["kernel_timing"]["tables"][0]["context"]["shapes"]
    assert f"cache {cfg.num_slots * gh * gw} tokens ({cfg.num_slots} slots" in timing, timing
    stream = parts["stream"]["results"]["variants"]
    eager = next(v for v in stream if v["variant"] == "eager")
    n_frames = int(round(report["options"]["stream_seconds"] * cfg.stream.fps))
    assert eager["ok"] and eager["frames"] == n_frames, eager
    assert eager["fps"] > 0 and eager["ttff_ms"] > 0 and eager["p95_ms"] >= eager["p50_ms"] > 0, eager
    # the CUDA-graph backend's buffers feed the same eager step on the CPU: bit-identical frames
    graphed = next(v for v in stream if v["variant"].startswith("CUDA graph of the DiT step"))
    assert graphed["ok"] and graphed["vs_eager_max_abs"] == 0.0, graphed


@pytest.mark.slow
def test_markdown_report_has_the_parts_table_and_notes(dry_run):
    proc, out, report, _ = dry_run
    assert report is not None, _explain(proc)
    md = (out / "report.md").read_text()
    assert "| part | status | wall s | limit s | note |" in md
    for p in report["parts"]:
        assert re.search(rf"^\| {p['name']} \| {p['status']} \| ", md, flags=re.M), p["name"]
        assert f"## {p['name']}: " in md
    assert "dry run" in md and "TensorRT-RTX does not target SM90" in md
    lines = md.splitlines()
    for i, line in enumerate(lines[:-1]):  # every table's separator has as many cells as its header
        if lines[i + 1].startswith("|---"):
            assert lines[i + 1].count("|") == line.count("|"), line


def test_a_hung_part_is_killed_at_its_limit_and_the_next_part_still_runs(tmp_path_factory):
    env = dict(os.environ, **{gc.TEST_HANG_ENV: "env"})
    proc, _, report, wall = _run(tmp_path_factory, "--parts", "env,kernel_timing", "--part-limit", "env=4", env=env)
    assert report is not None, _explain(proc)
    parts = _parts(report)
    assert parts["env"]["status"] == "fail" and parts["env"]["timed_out"], parts["env"]
    assert "timed out" in parts["env"]["reason"]
    assert parts["env"]["wall_s"] < 15, parts["env"]
    assert parts["kernel_timing"]["status"] == "pass", parts["kernel_timing"]["reason"]
    assert {parts[n]["status"] for n in ("build", "kernels", "stream", "baseline", "sanitizer")} == {"skip"}
    assert proc.returncode == 1  # a failed part makes the run fail
    assert wall < 120


def test_part_limits_fit_the_budget_and_keep_the_reserve_of_later_parts():
    assert gc.part_timeout(150, now=0.0, deadline=100.0, later_reserve_s=40.0) == 60.0
    assert gc.part_timeout(30, now=0.0, deadline=390.0, later_reserve_s=155.0) == 30
    args = gc.parse_args([])
    assert args.budget <= 420 - 30, "the GPU run must end under 7 minutes, with room for the report"
    assert sum(p.reserve_s for p in gc.PARTS) < args.budget
    for p in gc.PARTS:
        assert p.reserve_s <= p.limit_s <= 600 and p.reserve_s <= p.dry_limit_s, p  # the device's per-command limit
    dry = gc.parse_args(["--dry-run"])
    assert (dry.preset, dry.precision) == ("tiny", "fp32") and (args.preset, args.precision) == ("1.3b", "bf16")


def test_docs_name_the_device_command():
    for doc in ("README.md", "BENCHMARKS.md"):
        text = (REPO / doc).read_text()
        assert gc.DEVICE_COMMAND in text, f"{doc} does not name the GPU check's command `{gc.DEVICE_COMMAND}`"
    assert gc.DEVICE_COMMAND in SCRIPT.read_text()


@pytest.mark.slow
def test_profile_takes_a_chunk_apart_into_stages_that_add_up(dry_run):
    """The profile part: every chunk runs DiT step 1 and step 2 once and at least one cache pass, and the
    synchronised stages plus the host's rest are the stream's wall time."""
    proc, _, report, _ = dry_run
    assert report is not None, _explain(proc)
    p = _parts(report)["profile"]
    assert p["status"] == "pass", p["reason"]
    st = p["results"]["stages"]
    chunks = st["chunks"]
    assert chunks >= 2
    assert st["DiT step 1 (t = 1)"]["calls"] == st["DiT step 2 (t = 0.5)"]["calls"] == chunks
    assert st["DiT cache pass (t = 0; reference writes too)"]["calls"] >= chunks
    assert st["VAE decoder"]["calls"] == chunks and st["audio encoder"]["calls"] == chunks
    staged = sum(v["s"] for k, v in st.items() if isinstance(v, dict))
    assert 0 <= st["host_s"] < st["wall_s"]
    assert staged + st["host_s"] == pytest.approx(st["wall_s"], rel=1e-9)
    # the host's named parts: every one ran, each frame was cropped once and each chunk pasted once, and
    # they fit in its time
    host = p["results"]["host"]
    assert set(host) == {label for label, _, _ in gc.HOST_TIMERS}
    assert host["crop and mouth mask of each frame"]["calls"] == st["frames"]
    assert host[gc._PASTE]["calls"] == chunks
    assert all(v["s"] > 0 for v in host.values())
    assert sum(v["s"] for v in host.values()) < st["host_s"]
    assert gc.kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32") == "GEMM"
    assert gc.kernel_kind("pytorch_flash::flash_fwd_kernel") == "attention"
    assert gc.kernel_kind("vectorized_elementwise_kernel<4, silu>") == "elementwise and other"
