"""Avatar enrollment: the smoke on the bundled clips, resume, atomic output, bad sources."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from lipforce_sdk import Engine  # noqa: E402
from lipforce_sdk.avatar import Avatar  # noqa: E402
from lipforce_sdk.cli import PHOTO_DIR  # noqa: E402

enroll_mod = pytest.importorskip("lipforce_sdk.distill.enroll")
from lipforce_sdk.distill.enroll import EnrollConfig, EnrollError, add_arguments, enroll  # noqa: E402
from conftest import load_sample  # noqa: E402

enroll_check = load_sample("enroll_check")  # samples/enroll_check.py

SAMPLE = Path(enroll_mod.__file__).resolve().parents[1] / "lipforce_sdk" / "assets" / "avatar_sample" / "talking.mp4"
if not SAMPLE.is_file():  # installed: the asset lives in the package
    from lipforce_sdk import avatar as _av

    SAMPLE = Path(_av.__file__).parent / "assets" / "avatar_sample" / "talking.mp4"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models and few steps: single-threaded (many threads only fight over a busy CI machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quick(**over) -> EnrollConfig:
    """A few steps of everything: the smoke's settings."""
    kw = dict(decoder_steps=3, dit_steps=3, sentences=2, val_sentences=1, loop_seconds=0.6, window_frames=24,
              checkpoint_seconds=0.0, dit_batch=2, dit_video_frames=4, decoder_batch=2, eval_frames=8)
    kw.update(over)
    return EnrollConfig(**kw)


def run(src, out, **kw):
    kw.setdefault("config", quick())
    kw.setdefault("min_talking_seconds", 5.0)
    kw.setdefault("threads", 1)
    return enroll(src, out, progress=False, log=lambda m: None, **kw)


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory):
    import cv2

    from lipforce_sdk.media import iter_video_frames

    it = iter_video_frames(PHOTO_DIR / "face.mp4")
    f = next(it)
    it.close()
    p = tmp_path_factory.mktemp("photo") / "face.png"
    cv2.imwrite(str(p), f[..., ::-1])
    return p, f


@pytest.fixture(scope="module")
def talking_enrolled(tmp_path_factory):
    out = tmp_path_factory.mktemp("enrolled") / "sample"
    return run(SAMPLE, out, kind="auto"), out


def test_talking_clip_smoke_writes_an_ordinary_model_with_its_avatar(talking_enrolled, tmp_path):
    from lipforce_sdk.cli import main
    from lipforce_sdk.media import probe

    r, out = talking_enrolled
    assert r.kind == "talking" and r.out == out
    assert not out.with_name(out.name + ".partial").exists()
    m = json.loads((out / "manifest.json").read_text())
    assert m["enrollment"]["kind"] == "talking" and m["avatar"] == "avatar"
    assert m["enrollment"]["config"]["dit_steps"] == 3
    assert m["enrollment"]["config"]["context_shift"] == 6  # the talking default (the smoke's config leaves it)
    assert {"mouth_psnr_db", "mouth_ssim"} <= set(r.scores["enrolled"])
    card = (out / "MODEL_CARD.md").read_text()
    assert "talking.mp4" in card and "How it scored" in card
    assert "moving average of its weights, decay 0.995" in card  # the talking kind's default
    eng = Engine.load(out)  # an ordinary model directory
    # the avatar's own mouths, from its training crops, for the runtime's paste (lipforce_sdk.exemplars)
    assert m["exemplars"]["file"] == "exemplars.npz" and (out / "exemplars.npz").is_file()
    assert eng.exemplars is not None and len(eng.exemplars.images) == m["exemplars"]["count"] >= eng.exemplars.k
    assert eng.session(box=(16, 16, 144, 144)).renderer.exemplars.own is eng.exemplars  # then the stream's, for a large face
    assert eng.session(box=(16, 16, 144, 144), exemplars=False).renderer.exemplars is None
    # a talking clip's model learned the person's pauses: its sessions show its own mouth in silence
    assert m["config"]["stream"]["silence"] == "model" and "**Silence:**" in card
    assert eng.session(box=(16, 16, 144, 144)).renderer.gate is None
    assert eng.session(box=(16, 16, 144, 144), silence="still").renderer.gate is not None
    av = Avatar.load(out)
    assert av.info["kind"] == "talking" and 1 <= av.num_frames <= 15
    s = eng.session(avatar=av)  # the saved torch latents are this engine's
    assert len(s.push(np.zeros(10 * 640, np.float32)) + s.flush()) == 10
    from lipforce_sdk.media import read_audio, write_wav

    speech = tmp_path / "speech.wav"
    write_wav(speech, read_audio(PHOTO_DIR / "speech.wav")[: 20 * 640])
    video = tmp_path / "run.mp4"
    assert main(["run", "--model", str(out), "--avatar", "--audio", str(speech), "--out", str(video),
                 "--no-progress"]) == 0
    assert probe(video).num_frames == 20
    assert main(["run", "--model", str(out), "--video", str(SAMPLE), "--audio", str(speech), "--out", str(video),
                 "--no-progress"]) == 0
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "onnx"), "--no-progress"]) == 0
    exported = Engine.load(tmp_path / "onnx", backend="onnxruntime")
    assert exported.exemplars is not None and exported.config.stream.silence == "model"  # the export carries both
    import importlib.util

    if importlib.util.find_spec("tensorrt_rtx") is not None:  # builds ahead of time, even without a GPU
        assert main(["build", str(tmp_path / "onnx"), "--out", str(tmp_path / "trt"), "--target", "8.6",
                     "--no-progress"]) == 0
        built = json.loads((tmp_path / "trt" / "manifest.json").read_text())
        assert built["exemplars"]["file"] == "exemplars.npz" and built["config"]["stream"]["silence"] == "model"
        assert (tmp_path / "trt" / "exemplars.npz").read_bytes() == (out / "exemplars.npz").read_bytes()


def test_enroll_check_scores_base_and_enrolled_on_held_out_frames_and_new_speech(talking_enrolled, tmp_path):
    """samples/enroll_check.py (issue 12's measurement) end to end on the smoke's model (``--reuse``):
    a row per model on the held-out part and on the loop driven by new speech, and the mouth sheets
    with a row per model under the input."""
    import shutil

    import cv2

    from lipforce_sdk.media import read_audio, write_wav

    _, model = talking_enrolled
    work = tmp_path / "check"
    shutil.copytree(model, work / "avatar")  # --reuse takes the model found there
    speech = tmp_path / "speech.wav"
    write_wav(speech, read_audio(PHOTO_DIR / "speech.wav")[: 60 * 640])
    sheet = tmp_path / "sheet.png"
    assert enroll_check.main(["talking", str(SAMPLE), "--work", str(work), "--reuse", "--speech", str(speech),
                    "--sheet", str(sheet)]) == 0
    rep = json.loads((work / "report.json").read_text())
    names = ["base", "enrolled", "enrolled, no exemplars"]
    assert "enroll_seconds" not in rep  # reused, not enrolled again
    assert [r["model"] for r in rep["rows"]] == names and [r["model"] for r in rep["new_speech_rows"]] == names
    held = rep["held_out"]["frames"]
    for r in rep["rows"]:
        assert r["frames"] == held and 10.0 < r["lip_psnr_db"] < 60.0 and 0.0 < r["lip_ssim"] <= 1.0
        assert r["sharpness_ratio"] > 0.0 and -1.0 <= r["sync_r"] <= 1.0
    for r in rep["new_speech_rows"]:
        assert r["frames"] == 60 and "lip_psnr_db" not in r and r["skin_psnr_db"] > 10.0
    # the exemplars are the only difference between the last two rows: their outputs differ
    assert rep["rows"][1]["lip_psnr_db"] != rep["rows"][2]["lip_psnr_db"]
    for p in (sheet, sheet.with_name("sheet_new_speech.png")):
        im = cv2.imread(str(p))
        assert im is not None and im.shape[0] == 256 * (1 + len(names))  # input, then one row per model
        assert (im.shape[1] - 150) % 256 == 0 and im.shape[1] > 150
    assert "| enrolled |" in (work / "report.md").read_text()


def test_enroll_check_picks_the_loudest_frames_apart():
    n, sr = 200, 16000
    t = np.arange(n * 640) / sr
    audio = 0.001 * np.sin(2 * np.pi * 1000 * t)
    for f0, amp in ((30, 0.5), (34, 0.6), (120, 0.3), (170, 0.4)):  # 1 kHz bursts, 3 frames each
        audio[f0 * 640:(f0 + 3) * 640] = amp * np.sin(2 * np.pi * 1000 * t[f0 * 640:(f0 + 3) * 640])
    picks = enroll_check._loudest(audio.astype(np.float32), n, count=3, apart=20)
    assert len(picks) == 3 and np.all(np.diff(picks) > 20)
    # the loudest burst (34), then the next loudest at least 20 frames away from it (170, 120)
    assert abs(picks[0] - 35) <= 2 and abs(picks[1] - 121) <= 2 and abs(picks[2] - 171) <= 2


@pytest.mark.parametrize("what", ["idle", "photo"])
def test_idle_loop_and_photo_smoke(what, photo_png, tmp_path):
    src = PHOTO_DIR / "face.mp4" if what == "idle" else photo_png[0]
    r = run(src, tmp_path / what)
    assert r.kind == what
    av = Avatar.load(tmp_path / what)
    assert av.num_frames == (15 if what == "idle" else 1)
    assert av.frames.shape[1:] == (320, 320, 3)
    assert r.scores["held_out_frames"] > 0
    eng = Engine.load(tmp_path / what)  # made-up visemes, no pauses of the person: the gate holds as for the base
    assert eng.config.stream.silence is None and eng.session(avatar=av).renderer.gate is not None


def test_exemplars_can_be_added_to_a_model_enrolled_without_them(photo_png, tmp_path):
    from lipforce_sdk.cli import main
    from lipforce_sdk.distill.enroll import add_exemplars

    out = tmp_path / "photo"
    run(photo_png[0], out, config=quick(exemplars=0))
    assert "exemplars" not in json.loads((out / "manifest.json").read_text())
    assert Engine.load(out).exemplars is None
    weights = {f.name: f.read_bytes() for f in out.glob("*.safetensors")}
    other = tmp_path / "other.png"
    import cv2

    cv2.imwrite(str(other), np.ascontiguousarray(photo_png[1][::-1, :, ::-1]))
    with pytest.raises(EnrollError, match="is not the file"):
        add_exemplars(out, other, progress=False, log=lambda m: None)
    with pytest.raises(EnrollError, match="not an enrolled model"):
        add_exemplars(Path(Engine.load().model_dir), photo_png[0], progress=False, log=lambda m: None)
    assert main(["enroll", str(photo_png[0]), "--out", str(out), "--add-exemplars", "--no-progress"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    eng = Engine.load(out)
    assert eng.exemplars is not None and len(eng.exemplars.images) == m["exemplars"]["count"] > 1
    assert {f.name: f.read_bytes() for f in out.glob("*.safetensors")} == weights  # the weights are not touched
    assert not list(tmp_path.glob(".photo.exemplars*"))  # its work folder is gone


def test_exemplars_added_to_a_talking_model_are_those_its_enrollment_wrote(talking_enrolled, tmp_path):
    import shutil

    from lipforce_sdk.distill.enroll import add_exemplars

    _, out = talking_enrolled
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "exemplars.npz").unlink()
    m = json.loads((again / "manifest.json").read_text())
    del m["exemplars"]
    (again / "manifest.json").write_text(json.dumps(m))
    n = add_exemplars(again, SAMPLE, progress=False, log=lambda m: None)
    assert n == json.loads((out / "manifest.json").read_text())["exemplars"]["count"]
    assert json.loads((again / "manifest.json").read_text())["exemplars"] == \
        json.loads((out / "manifest.json").read_text())["exemplars"]
    a, b = Engine.load(out).exemplars, Engine.load(again).exemplars
    assert np.array_equal(a.images, b.images)


def test_dit_settings_default_per_source_kind():
    got = [(c.dit_steps, c.dit_lr) for c in (EnrollConfig().for_kind(k) for k in ("talking", "idle", "photo"))]
    assert got == [(1400, 2e-3), (700, 1e-3), (1200, 1e-3)]
    assert EnrollConfig(dit_steps=5).for_kind("photo").dit_steps == 5
    assert EnrollConfig(dit_lr=5e-4).for_kind("talking") == EnrollConfig(dit_steps=1400, dit_lr=5e-4, context_shift=6,
                                                                            dit_ema=0.995)
    assert [EnrollConfig().for_kind(k).context_shift for k in ("talking", "idle", "photo")] == [6, 0, 0]
    assert EnrollConfig(context_shift=0).for_kind("talking").context_shift == 0
    assert [EnrollConfig().for_kind(k).dit_ema for k in ("talking", "idle", "photo")] == [0.995, 0.0, 0.0]
    assert EnrollConfig(dit_ema=0.0).for_kind("talking").dit_ema == 0.0
    with pytest.raises(EnrollError, match="context_shift"):
        EnrollConfig(context_shift=-1).validate()
    with pytest.raises(EnrollError, match="dit_steps"):
        EnrollConfig(dit_steps=-1).validate()
    with pytest.raises(EnrollError, match="mouth_weight"):
        EnrollConfig(mouth_weight=-0.5).validate()
    # a parsed command line: the fields it gives replace the defaults; the rest of it is not the config's
    ns = argparse.Namespace(dit_steps=5, mouth_weight=None, loop_seconds=3.0, out="avatars/x", threads=2)
    assert EnrollConfig.from_options(ns) == EnrollConfig(dit_steps=5, loop_seconds=3.0)
    # `lipforce enroll`'s own parser: what it is given reaches the config, what it is not keeps the default
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["clip.mp4", "--out", "avatars/x", "--mouth-weight", "12", "--dit-ema", "0"])
    assert EnrollConfig.from_options(a) == EnrollConfig(mouth_weight=12.0, dit_ema=0.0)
    assert EnrollConfig.from_options(p.parse_args(["clip.mp4", "--out", "avatars/x"])) == EnrollConfig()


def test_dit_weight_average_is_kept_and_survives_a_resume(tmp_path, monkeypatch):
    """``dit_ema``: the trained weights end as the moving average of every step's weights (decay
    ``min(ema, (1 + i) / (10 + i))``), and a run stopped half-way and continued ends the same."""
    import torch

    def job(work):
        j = enroll_mod._Enrollment.__new__(enroll_mod._Enrollment)
        j.work, j.cfg, j.progress, j.log = work, EnrollConfig(checkpoint_seconds=0.0), False, lambda m: None
        work.mkdir()
        return j

    def train(j, ema):
        lin = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(lin.weight)

        def step(it, rng, gen, opt, sched):  # stands in for an optimizer: step i leaves the weight at (i + 1)^2
            with torch.no_grad():
                lin.weight.fill_(float((it + 1) ** 2))
            return 0.0

        j._train("t", 8, {"lin": lin}, [lin.weight], 1e-3, step, ema=ema)
        return float(lin.weight)

    want = 0.0
    for i in range(8):
        d = min(0.9, (1 + i) / (10 + i))
        want = d * want + (1 - d) * (i + 1) ** 2
    assert train(job(tmp_path / "raw"), 0.0) == 64.0  # off: the last step's weights
    assert train(job(tmp_path / "avg"), 0.9) == pytest.approx(want, rel=1e-6)
    assert want < 60  # the average lags behind the last step's weights

    def stop(name, step):
        if step == 3:
            raise KeyboardInterrupt

    j = job(tmp_path / "resumed")
    monkeypatch.setattr(enroll_mod, "_on_step", stop)
    with pytest.raises(KeyboardInterrupt):
        train(j, 0.9)
    monkeypatch.setattr(enroll_mod, "_on_step", lambda name, step: None)
    assert train(j, 0.9) == pytest.approx(want, rel=1e-6)
    with pytest.raises(EnrollError, match="dit_ema"):
        EnrollConfig(dit_ema=1.0).validate()


@pytest.mark.parametrize("share", [0.5, 1.0, 0.0])
def test_context_shift_moves_the_share_of_windows_within_the_clip(share):
    import torch

    from lipforce_sdk.distill.enroll import _shift_condition
    from lipforce_sdk.distill.teacher import LatentSet

    lens = [12, 9, 5]  # latent frames per clip; each frame's condition holds its own index
    ls = LatentSet([torch.zeros(1, n, 2, 2) for n in lens],
                   [torch.arange(n, dtype=torch.float32).view(1, n, 1, 1).expand(1, n, 2, 2) + 100 * i
                    for i, n in enumerate(lens)], [], [], [], [], [], 1, 8)
    rng = np.random.default_rng(0)
    frames, shifts = 4, []
    for _ in range(200):
        picks = ls.pick(rng, 3, frames)
        cond = torch.stack([ls.cond[i][:, s:s + frames] for i, s in picks])
        d = _shift_condition(ls, picks, frames, 3, rng, cond, share)
        for b, ((i, s0), dk) in enumerate(zip(picks, d)):
            s1 = s0 + dk
            assert abs(dk) <= 3 and 0 <= s1 <= lens[i] - frames  # from the same clip, inside it
            assert torch.equal(cond[b, 0, :, 0, 0], torch.arange(s1, s1 + frames, dtype=torch.float32) + 100 * i)
        shifts += d
    moved = np.count_nonzero(shifts) / len(shifts)
    # a window drawn to move always moves (a clip of 5 latent frames leaves a 4-frame window one step)
    assert (moved == share) if share in (0.0, 1.0) else abs(moved - share) < 0.07, moved
    if share:
        assert min(shifts) < 0 < max(shifts)


@pytest.mark.parametrize("stage", ["dit", "decoder"])
def test_interrupted_run_resumes_to_the_same_weights(stage, photo_png, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    cfg = quick(decoder_steps=4, dit_steps=4)
    whole = run(photo_png[0], tmp_path / "whole", config=cfg)

    def stop(name, step):
        if name == stage and step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(enroll_mod, "_on_step", stop)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run(photo_png[0], out, config=cfg)
    partial = out.with_name("resumed.partial")
    assert not out.exists(), "a half-written model directory is visible"
    assert (partial / "work" / f"{stage}.ckpt.pt").is_file() and not (partial / "work" / f"{stage}.pt").exists()
    monkeypatch.setattr(enroll_mod, "_on_step", lambda name, step: None)
    again = run(photo_png[0], out, config=cfg)
    assert again.resumed and not partial.exists()
    for f in ("dit.safetensors", "vae.safetensors", "audio_encoder.safetensors"):
        a, b = load_file(str(whole.out / f)), load_file(str(out / f))
        assert all(np.array_equal(a[k], b[k]) for k in a), f"{f} differs after resuming {stage}"


def test_failure_late_leaves_no_model_directory_and_other_settings_are_refused(photo_png, tmp_path, monkeypatch):
    out = tmp_path / "x"

    def boom(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(enroll_mod._Enrollment, "avatar", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run(photo_png[0], out)
    assert not out.exists() and out.with_name("x.partial").exists()
    with pytest.raises(EnrollError, match="other settings.*config"):
        run(photo_png[0], out, config=quick(dit_steps=5))
    monkeypatch.undo()
    run(photo_png[0], out, config=quick(dit_steps=5), restart=True)
    assert (out / "manifest.json").is_file()
    with pytest.raises(EnrollError, match="already exists.*--force"):
        run(photo_png[0], out)
    before = (out / "dit.safetensors").read_bytes()
    run(photo_png[0], out, force=True, config=quick(seed=1))
    assert (out / "dit.safetensors").read_bytes() != before and not list(tmp_path.glob(".x.old*"))


def write_clip(path, frames, audio=None):
    from lipforce_sdk.media import write_video

    write_video(path, frames, 25, audio=audio)
    return path


@pytest.fixture(scope="module")
def clip_frames():
    from lipforce_sdk.media import read_video

    return read_video(SAMPLE)[0][:50]


def test_bad_sources_name_the_fix(clip_frames, photo_png, tmp_path):
    import cv2

    from lipforce_sdk.media import read_audio

    speech = read_audio(SAMPLE)[: 50 * 640]
    cases = [
        (tmp_path / "notes.txt", "unsupported file type", None),
        (tmp_path / "missing.mp4", "does not exist", None),
    ]
    (tmp_path / "notes.txt").write_text("hello")
    for src, msg, kw in cases:
        with pytest.raises(EnrollError, match=msg):
            run(src, tmp_path / "o", **(kw or {}))
    # too short for a talking clip (the default minimum): says how long it is and what to do
    with pytest.raises(EnrollError, match=r"too short: 8\.0 s.*>= 30 s.*--kind idle"):
        enroll(SAMPLE, tmp_path / "o", config=quick(), progress=False, log=lambda m: None)
    # no speech in the sound track
    quiet = write_clip(tmp_path / "quiet.mp4", clip_frames, np.zeros(50 * 640, np.float32))
    with pytest.raises(EnrollError, match="no speech in the sound track.*--kind idle"):
        run(quiet, tmp_path / "o", kind="talking", min_talking_seconds=1)
    with pytest.raises(EnrollError, match="no sound track"):
        run(write_clip(tmp_path / "mute.mp4", clip_frames), tmp_path / "o", kind="talking", min_talking_seconds=1)
    # no face
    flat = write_clip(tmp_path / "flat.mp4", np.full((20, 128, 128, 3), 90, np.uint8))
    with pytest.raises(EnrollError, match="no face found"):
        run(flat, tmp_path / "o")
    # face too small: the photo at a fifth of its size in a large frame
    f = photo_png[1]
    small = np.full((720, 720, 3), 200, np.uint8)
    small[300:364, 300:364] = cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "small.png"), small[..., ::-1])
    with pytest.raises(EnrollError, match=r"too small.*eyes are \d+ px apart.*needs >= \d+ px"):
        run(tmp_path / "small.png", tmp_path / "o")
    # several faces
    two = np.concatenate([clip_frames[:20], clip_frames[:20, :, ::-1]], axis=2)
    with pytest.raises(EnrollError, match="several faces.*crop the video"):
        run(write_clip(tmp_path / "two.mp4", two, speech[: 20 * 640]), tmp_path / "o", kind="idle")
    # an image is a photo only
    with pytest.raises(EnrollError, match="only be enrolled as a photo"):
        run(photo_png[0], tmp_path / "o", kind="talking")
    assert not (tmp_path / "o").exists()


def test_device_cuda_without_a_gpu_is_refused(photo_png, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(EnrollError, match="--device cuda: no CUDA GPU"):
        run(photo_png[0], tmp_path / "o", device="cuda")


def test_cli_enroll_reports_errors(tmp_path, capsys):
    from lipforce_sdk.cli import main

    assert main(["enroll", str(SAMPLE), "--out", str(tmp_path / "o"), "--kind", "talking", "--no-progress"]) == 2
    assert "too short" in capsys.readouterr().err
