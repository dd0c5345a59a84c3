"""distill.sources: the manifest of the public clips behind the real-face figures, and the fetch that
checks them byte for byte (against a file:// mirror here; the machine running the tests need not reach
GitHub)."""

import hashlib
import json
from pathlib import Path

import pytest

from distill import sources
from distill.sources import SourceError, fetch, load_sources, url_of, verify


def test_manifest_names_what_the_commands_read():
    srcs = load_sources()
    dest = {t for s in srcs for t in s.to}
    # the folders and files BENCHMARKS.md's realeval and enroll_check commands read
    for name in ("eval_talking/edtalk_pose_source2.mp4", "eval_talking/infinitetalk_ref_video.mp4",
                 "eval_talking/sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", "eval_talking/videoretalking_face1.mp4",
                 "eval_avatars/latentsync_demo2.mp4", "eval_avatars/musetalk_sun.mp4",
                 "eval_avatars/musetalk_yongen.mp4", "speech.16k.wav", "speech2.16k.wav", "edtalk_pose_source2.mp4",
                 "obama_cspan_dnc2020.mp4"):
        assert name in dest
    for s in srcs:
        assert len(s.commit) == 40 and s.licence and set(s.sets) <= set(sources.SETS)
    assert len(dest) == sum(len(s.to) for s in srcs)  # no destination named twice
    assert {t for s in load_sources(sets=("enroll",)) for t in s.to} == {
        "eval_talking/edtalk_pose_source2.mp4", "edtalk_pose_source2.mp4", "speech.16k.wav", "obama_cspan_dnc2020.mp4"}


def test_training_clips_keep_the_evaluation_people_out():
    train, others = load_sources(sets=("train",)), load_sources(sets=("eval", "enroll"))
    assert len(train) == 11 and all(t.startswith("train_clips/") for s in train for t in s.to)
    used = {(s.repo, s.path) for s in train}
    assert not used & {(s.repo, s.path) for s in others}
    # other clips of the evaluation's people in the same repositories (distill/README.md)
    for repo, path in (("OpenTalker/video-retalking", "examples/face/3.mp4"),
                       ("tanshuai0219/EDTalk", "test_data/pose_source1.mp4"),
                       ("tanshuai0219/EDTalk", "test_data/pose_source2.mp4"),
                       ("tanshuai0219/EDTalk", "test_data/uncrop_Obama.mp4")):
        assert (repo, path) not in used
    assert not any("short_case/AOC" in p for _, p in used)


def test_photos_are_images_of_no_evaluation_person():
    photos, others = load_sources(sets=("photos",)), load_sources(sets=("eval", "enroll", "train"))
    assert len(photos) >= 200 and all(s.sets == ("photos",) for s in photos)
    assert all(len(s.to) == 1 and s.to[0].startswith("photos/") for s in photos)
    assert all(Path(s.path).suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"} for s in photos)
    assert len({s.sha256 for s in photos}) == len(photos)  # no picture twice under two names
    assert not {(s.repo, s.path) for s in photos} & {(s.repo, s.path) for s in others}
    # the evaluation's people: nothing from the files their clips came from, nor of them by name
    assert not any(s.repo in ("MeiGen-AI/InfiniteTalk", "bytedance/LatentSync", "OpenTalker/video-retalking",
                              "tanshuai0219/EDTalk")
                   for s in photos)
    assert not any(w in s.path.lower() for s in photos for w in ("aoc", "ocasio", "wda_", "sun", "yongen"))


def test_url_quotes_the_path():
    s = load_sources(sets=("eval",))
    speech = next(x for x in s if "speech.16k.wav" in x.to)
    assert url_of(speech).startswith("https://raw.githubusercontent.com/FuxiVirtualHuman/")
    assert url_of(speech).endswith("/samples/audios/ChrisVanHollen1%230.wav")
    assert url_of(speech, "file:///m/").startswith("file:///m/FuxiVirtualHuman/")


def _mirror(tmp_path: Path, files: dict[str, bytes]):
    """A raw-host layout under tmp_path/mirror and a manifest naming ``files`` (destination -> bytes)."""
    entries = []
    for i, (to, data) in enumerate(files.items()):
        repo, commit, path = f"owner{i}/repo", f"{i:040d}", f"media/clip {i}#a.mp4"
        p = tmp_path / "mirror" / repo / commit / path
        p.parent.mkdir(parents=True)
        p.write_bytes(data)
        entries.append({"to": [to] if i else [to, "copy/" + to], "repo": repo, "commit": commit, "path": path,
                        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "licence": "test",
                        "what": "test clip", "sets": ["eval"]})
    man = tmp_path / "sources.json"
    man.write_text(json.dumps({"about": "test", "files": entries}))
    return (tmp_path / "mirror").as_uri(), man


def test_fetch_checks_and_keeps(tmp_path):
    data = {"a/one.mp4": b"first clip" * 1000, "two.wav": b"\x00\x01" * 777}
    base, man = _mirror(tmp_path, data)
    srcs = load_sources(man)
    out = tmp_path / "out"
    written = fetch(out, srcs, base_url=base, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["a/one.mp4", "copy/a/one.mp4", "two.wav"]
    assert (out / "a/one.mp4").read_bytes() == data["a/one.mp4"] == (out / "copy/a/one.mp4").read_bytes()
    assert (out / "two.wav").read_bytes() == data["two.wav"]
    assert set(verify(out, srcs).values()) == {"ok"}
    assert fetch(out, srcs, base_url=base, progress=False) == []  # all there and matching: nothing written
    (out / "two.wav").unlink()
    assert verify(out, srcs)["two.wav"] == "missing"
    assert [p.name for p in fetch(out, srcs, base_url=base, progress=False)] == ["two.wav"]


def test_fetch_refuses_other_bytes(tmp_path):
    data = {"one.mp4": b"the real clip" * 500}
    base, man = _mirror(tmp_path, data)
    srcs = load_sources(man)
    # the mirror serves other bytes of the same size: nothing written, no temporary file left
    mirrored = next((tmp_path / "mirror").rglob("*.mp4"))
    mirrored.write_bytes(b"X" * len(data["one.mp4"]))
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="not the file the figures were measured on"):
        fetch(out, srcs, base_url=base, progress=False)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    # a file already at the destination with other bytes: an error, left as it was
    out.mkdir(exist_ok=True)
    (out / "one.mp4").write_bytes(b"mine")
    with pytest.raises(SourceError, match="move it away"):
        fetch(out, srcs, base_url=base, progress=False)
    assert (out / "one.mp4").read_bytes() == b"mine"
    assert verify(out, srcs)["one.mp4"] == "differs"


def test_fetch_names_the_missing_url(tmp_path):
    base, man = _mirror(tmp_path, {"one.mp4": b"clip"})
    with pytest.raises(SourceError, match="could not fetch .*--base-url"):
        fetch(tmp_path / "out", load_sources(man), base_url=(tmp_path / "nowhere").as_uri(), progress=False)
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_manifest_rejects_paths_outside(tmp_path):
    man = tmp_path / "m.json"
    entry = {"to": ["../x.mp4"], "repo": "o/r", "commit": "0" * 40, "path": "x.mp4", "size": 1,
             "sha256": "0" * 64, "licence": "", "what": "", "sets": ["eval"]}
    man.write_text(json.dumps({"files": [entry]}))
    with pytest.raises(SourceError, match="outside the output folder"):
        load_sources(man)
    man.write_text(json.dumps({"files": [dict(entry, to=["x.mp4"], sha256="abc")]}))
    with pytest.raises(SourceError, match="64 hex digits"):
        load_sources(man)


def test_cli(tmp_path, capsys):
    base, man = _mirror(tmp_path, {"one.mp4": b"clip" * 10})
    out = tmp_path / "out"
    assert sources.main(["verify", "--out", str(out), "--manifest", str(man)]) == 1
    assert sources.main(["fetch", "--out", str(out), "--manifest", str(man), "--base-url", base, "--no-progress"]) == 0
    assert "2 file(s) written" in capsys.readouterr().out
    assert sources.main(["verify", "--out", str(out), "--manifest", str(man)]) == 0
    assert sources.main(["list"]) == 0
    assert "github.com/OpenTalker/SadTalker" in capsys.readouterr().out
    assert sources.main(["fetch", "--out", str(out), "--manifest", str(man), "--base-url",
                         (tmp_path / "nowhere").as_uri(), "--no-progress"]) == 0  # all there: no download

