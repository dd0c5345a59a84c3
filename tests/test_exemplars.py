"""Mouth exemplars (lipforce_sdk.exemplars): an enrolled avatar's and a stream's own; lookup, band split, file, paste."""

import json
import threading

import cv2
import numpy as np
import pytest

from lipforce_sdk.geometry import match_edge
from lipforce_sdk.exemplars import (EXEMPLARS_FILE, MouthExemplars, carry_exemplars, load_exemplars, manifest_entry,
                                    mouth_key, pixel_median)

S = 64


def mouths(n: int = 10, seed: int = 0) -> np.ndarray:
    """Crops of one made-up face: skin with fine texture (fixed), a dark mouth opening 1, 2, ... n pixels."""
    rng = np.random.default_rng(seed)
    base = np.empty((S, S, 3), np.float32)
    base[:] = (200, 150, 130)
    base += rng.normal(0, 12, (S, S, 1)).astype(np.float32)  # pores: the detail a soft model loses
    out = []
    for i in range(n):
        im = base.copy()
        h = i + 1  # the opening
        cv2.ellipse(im, (S // 2, int(0.42 * S)), (14, h), 0, 0, 360, (60, 20, 30), -1)
        cv2.line(im, (S // 2 - 14, int(0.42 * S)), (S // 2 + 14, int(0.42 * S)), (120, 40, 50), 1)
        out.append(np.clip(im, 0, 255).astype(np.uint8))
    return np.stack(out)


def lap_var(im: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var())


def test_a_soft_mouth_gets_the_persons_detail_and_keeps_its_own_shape():
    crops = mouths()
    ex = MouthExemplars.build(crops[::2], k=1)
    j = 5  # a mouth between two exemplars' openings (5 and 7 px), not in the bank
    gen = cv2.GaussianBlur(crops[j], (0, 0), 1.5)  # what a regression model draws: the shape, soft
    out = ex.refine(gen)
    assert lap_var(out) > 3.0 * lap_var(gen)  # the fine band is back
    assert lap_var(out) > 0.7 * lap_var(crops[j])
    sig = ex.cutoff * S
    low = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), sig) for x in (out, gen)]
    assert np.abs(low[0] - low[1]).mean() < 1.5  # below the cut-off the picture is the model's
    # closer to the real crop than the soft one is, by the texture it got back
    err = [np.abs(x.astype(np.float32) - crops[j]).mean() for x in (out, gen)]
    assert err[0] < 0.6 * err[1]


def test_an_exemplar_refines_to_itself_and_far_keys_leave_the_crop_alone():
    crops = mouths()
    ex = MouthExemplars.build(crops, k=1)
    for j in (0, 4, 9):
        assert np.abs(ex.refine(crops[j]).astype(int) - crops[j]).max() <= 1
    noise = np.random.default_rng(1).integers(0, 256, (S, S, 3), dtype=np.uint8)
    idx, dist = ex.nearest(mouth_key(noise))
    assert dist > ex.far
    assert np.array_equal(ex.refine(noise), noise)  # unlike every exemplar: the model's crop as it is
    assert ex.weight(ex.near) == 1.0 and ex.weight(ex.far) == 0.0 and 0.0 < ex.weight(0.5 * (ex.near + ex.far)) < 1.0


def test_k_nearest_are_the_nearest_openings_and_their_median_keeps_the_detail():
    crops = mouths()
    ex = MouthExemplars.build(crops, k=3)
    idx, _ = ex.nearest(mouth_key(crops[5]))
    assert sorted(idx.tolist()) == [4, 5, 6]
    gen = cv2.GaussianBlur(crops[5], (0, 0), 1.5)
    out = ex.refine(gen)
    assert lap_var(out) > 0.8 * lap_var(crops[5]) and lap_var(out) > 3.0 * lap_var(gen)


def test_build_drops_repeats_and_keeps_at_most_max_items():
    crops = mouths(10)
    ex = MouthExemplars.build(np.concatenate([crops, crops[:4]]))
    assert len(ex.images) == 10 and ex.keys.shape == (10, 16 * 24 * 3)
    assert len(MouthExemplars.build(crops, max_items=4).images) == 4
    assert MouthExemplars.build(crops[:2]).k == 2  # fewer than k: all of them
    with pytest.raises(ValueError, match="uint8"):
        MouthExemplars.build(crops.astype(np.float32))
    with pytest.raises(ValueError, match="cutoff"):
        MouthExemplars(crops, np.stack([mouth_key(c) for c in crops]), cutoff=0.7)
    with pytest.raises(ValueError, match="gen must be"):
        MouthExemplars.build(crops).refine(crops[0][:32])


def test_the_file_round_trips_within_jpeg_error(tmp_path):
    crops = mouths()
    ex = MouthExemplars.build(crops, k=4, cutoff=0.05)
    ex.save(tmp_path / "ex.npz")
    back = MouthExemplars.load(tmp_path / "ex.npz")
    assert (back.k, back.cutoff, back.near, back.far) == (4, 0.05, ex.near, ex.far)
    assert back.images.shape == ex.images.shape
    assert np.abs(back.images.astype(int) - ex.images).mean() < 2.0
    assert np.abs(back.keys - ex.keys).mean() < 1.0  # recomputed from the decoded crops
    assert manifest_entry(tmp_path / "ex.npz") == {"file": "ex.npz", "count": 10, "k": 4, "cutoff": 0.05}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a mouth exemplar file"):
        MouthExemplars.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="not a mouth exemplar file"):
        manifest_entry(tmp_path / "bad.npz")


def _model_dir(path, exemplars: bool):
    path.mkdir()
    m = {"format": "lipforce-model"}
    if exemplars:
        MouthExemplars.build(mouths()).save(path / EXEMPLARS_FILE)
        m["exemplars"] = {"file": EXEMPLARS_FILE, "count": 10}
    (path / "manifest.json").write_text(json.dumps(m))
    return path


def test_exports_and_builds_carry_the_exemplars(tmp_path):
    src = _model_dir(tmp_path / "enrolled", True)
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "lipforce-model", "graphs": {}}))
    assert carry_exemplars(src, out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["exemplars"]["file"] == EXEMPLARS_FILE and "graphs" in m
    assert (out / EXEMPLARS_FILE).read_bytes() == (src / EXEMPLARS_FILE).read_bytes()
    assert load_exemplars(out) is not None
    plain = _model_dir(tmp_path / "general", False)
    before = (out / "manifest.json").read_text()
    assert not carry_exemplars(plain, out) and (out / "manifest.json").read_text() == before
    assert load_exemplars(plain) is None and load_exemplars(None) is None
    (src / EXEMPLARS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="copy the whole model directory"):
        load_exemplars(src)


def test_paste_through_exemplars_changes_nothing_outside_the_mask():
    """The composite with exemplars differs from the plain one inside the mask only; outside it
    every pixel is the frame's own."""
    from lipforce_sdk.config import from_name
    from lipforce_sdk.geometry import FaceKeypoints
    from lipforce_sdk.session import ChunkRenderer, FramePreparer

    cfg = from_name("tiny")
    size = cfg.stream.resolution
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (240, 200, 3), dtype=np.uint8)
    view = FramePreparer(cfg)(frame, FaceKeypoints.template((40, 30, 170, 160)))
    big = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC) for m in mouths()])
    ex = MouthExemplars.build(big, k=1, far=1e4)  # every key near enough: the band is always replaced
    gen = cv2.GaussianBlur(big[5], (0, 0), 2.0)
    plain = ChunkRenderer(None, cfg, 0).composite(frame, view, gen)
    refined = ChunkRenderer(None, cfg, 0, exemplars=ex).composite(frame, view, gen)
    w = view.crop.frame_weight(view.mask.soft, frame.shape[:2])
    outside = w == 0
    assert np.array_equal(refined[outside], frame[outside]) and np.array_equal(plain[outside], frame[outside])
    inside = w > 0.5
    assert np.abs(refined[inside].astype(int) - plain[inside]).mean() > 1.0


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 9])
def test_pixel_median_is_numpys_median(k):
    rng = np.random.default_rng(k)
    images = rng.integers(0, 256, (k, 17, 13, 3), dtype=np.uint8)
    images[:, 0] = 7  # ties
    got = pixel_median(images)
    assert got.dtype == np.float32 and got.shape == images.shape[1:]
    assert np.array_equal(got, np.median(images, axis=0).astype(np.float32))


def test_refine_is_the_band_split_it_documents():
    """blur(gen) + (median - blur(median)) of the k nearest, computed here the long way (float64, two
    blurs, numpy's median): within one level of the runtime's one-blur form."""
    crops = mouths(12)
    ex = MouthExemplars.build(crops, k=3)
    gen = cv2.GaussianBlur(crops[4], (0, 0), 1.5)
    idx, dist = ex.nearest(mouth_key(gen))
    assert ex.weight(dist) == 1.0
    med = np.median(ex.images[idx], axis=0)
    sig = ex.cutoff * S
    want = cv2.GaussianBlur(gen.astype(np.float64), (0, 0), sig) + med - cv2.GaussianBlur(med, (0, 0), sig)
    want = np.clip(np.rint(want), 0, 255)
    assert np.abs(ex.refine(gen).astype(np.float64) - want).max() <= 1.0


# ---- a general model's exemplars: the stream's own first seconds ----

LARGE = {"box": (30, 40, 530, 540), "hw": (600, 560)}  # a face about 1.7x the model's crop across


def _stream_setup(n: int = 6, box=(40, 30, 170, 160), hw=(240, 200), images=None, noise_seed=None):
    """Frames of one made-up face (``images``, default: the mouth opening 1..n px), each with its
    view (template keypoints of ``box``), drawn at the crop's size or, where the face is larger in
    the frame, at its own size (rounded up to 16) with, given ``noise_seed``, fine texture that
    the crop's size cannot hold (the same in every frame)."""
    from lipforce_sdk.config import from_name
    from lipforce_sdk.geometry import FaceKeypoints
    from lipforce_sdk.session import FramePreparer

    cfg = from_name("tiny")
    prep = FramePreparer(cfg)
    blank = np.full((*hw, 3), 90, np.uint8)
    probe = prep(blank, FaceKeypoints.template(box)).crop
    size = max(cfg.stream.resolution, 16 * int(np.ceil(probe.side / 16)))
    frames, views = [], []
    for m in mouths(n) if images is None else images:
        face = cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
        if noise_seed is not None:
            grain = np.random.default_rng(noise_seed).normal(0, 10, face.shape[:2])[..., None]
            face = np.clip(face.astype(np.float32) + grain, 0, 255).astype(np.uint8)
        frame = probe.at_size(size).paste(blank, face, np.ones((size, size), np.float32))  # the face drawn into the frame
        frames.append(frame)
        views.append(prep(frame, FaceKeypoints.template(box)))
    return cfg, frames, views


def test_stream_exemplars_hold_only_frames_already_shown_and_stop_at_their_count():
    from lipforce_sdk.exemplars import STREAM_CUTOFF, StreamExemplars
    from lipforce_sdk.session import ChunkRenderer

    cfg, frames, views = _stream_setup(6)
    ex = StreamExemplars(frames=4)
    r = ChunkRenderer(None, cfg, 0, exemplars=ex)
    gen = cv2.GaussianBlur(views[5].image, (0, 0), 2.0)
    first = r.composite(frames[0], views[0], gen)  # nothing held yet: the plain paste
    assert np.array_equal(first, ChunkRenderer(None, cfg, 0).composite(frames[0], views[0], gen))
    assert ex.count == 1  # the frame just shown, kept after it was pasted
    assert ex.bank().k == 1 and ex.bank().cutoff == STREAM_CUTOFF
    r.composite(frames[0], views[0], gen)  # the same crop again: not kept twice
    assert ex.count == 1
    for f, v in zip(frames[1:], views[1:]):
        r.composite(f, v, gen)
    assert ex.count == 4 and ex.full  # no more than asked
    assert ex.bank().k == 4
    held = ex.held
    assert len(held) == 4
    assert all(np.array_equal(h, v.crop.crop(f, interpolation=cv2.INTER_CUBIC)) for h, f, v in zip(held, frames, views))
    r.reset()  # a new stream: nothing carries over
    assert ex.count == 0 and ex.bank() is None
    with pytest.raises(ValueError, match="frames=0"):
        StreamExemplars(frames=0)


def test_stream_exemplars_give_a_soft_mouth_the_streams_fine_detail_only_inside_the_mask():
    from lipforce_sdk.exemplars import StreamExemplars
    from lipforce_sdk.session import ChunkRenderer

    cfg, frames, views = _stream_setup(6)
    ex = StreamExemplars(frames=50)
    r = ChunkRenderer(None, cfg, 0, exemplars=ex)
    for f, v in zip(frames[:5], views[:5]):
        r.composite(f, v, v.image)
    gen = cv2.GaussianBlur(views[5].image, (0, 0), 1.5)  # the sixth mouth, soft, not held
    out = ex.refine(gen)
    assert lap_var(out) > 2.0 * lap_var(gen)  # the fine band is back from the stream's crops
    sig = ex.settings["cutoff"] * cfg.stream.resolution
    low = [cv2.GaussianBlur(x.astype(np.float32), (0, 0), sig) for x in (out, gen)]
    assert np.abs(low[0] - low[1]).mean() < 1.5  # below the (fine) cut-off the picture is the model's
    pasted, plain = r.composite(frames[5], views[5], gen), ChunkRenderer(None, cfg, 0).composite(frames[5], views[5], gen)
    w = views[5].crop.frame_weight(views[5].mask.soft, frames[5].shape[:2])
    assert np.array_equal(pasted[w == 0], frames[5][w == 0])
    assert np.abs(pasted[w > 0.5].astype(int) - plain[w > 0.5]).mean() > 1.0


def test_sessions_take_the_models_exemplars_else_the_streams_own():
    from lipforce_sdk.exemplars import STREAM_LARGE, LayeredExemplars, StreamExemplars
    from lipforce_sdk.session import Engine, session_exemplars

    eng = Engine.load(None, backend="torch")  # the bundled general model: no exemplar file
    assert eng.exemplars is None
    s1, s2 = eng.session(box=(16, 16, 144, 144)), eng.session(box=(16, 16, 144, 144))
    assert isinstance(s1.renderer.exemplars, StreamExemplars) and s1.renderer.exemplars is not s2.renderer.exemplars
    assert s1.renderer.exemplars.frames == round(2.0 * eng.config.stream.fps)
    assert eng.session(box=(16, 16, 144, 144), exemplars=False).renderer.exemplars is None
    eng.exemplars = own = MouthExemplars.build(mouths(), k=1)
    layered = session_exemplars(eng)
    assert isinstance(layered, LayeredExemplars) and layered.own is own and session_exemplars(eng, False) is None
    assert isinstance(layered.stream, StreamExemplars) and layered.stream is not session_exemplars(eng).stream
    # after the avatar's own exemplars the stream keeps one set of settings at every face size
    assert layered.stream.large == {} and s1.renderer.exemplars.large == STREAM_LARGE


@pytest.mark.parametrize("angle,size", [(0.0, 208), (0.3, 176), (-0.7, 256)])
def test_a_picture_at_another_size_pastes_where_the_crops_own_weights_say(angle, size):
    """``AlignedCrop.paste`` of a picture cut at another size than the weights: the frame pixels
    it leaves alone are exactly those the weights' own paste leaves alone, and a picture that is
    the crop enlarged pastes (almost) as the crop itself does."""
    from lipforce_sdk.config import from_name
    from lipforce_sdk.geometry import AlignedCrop, FaceKeypoints
    from lipforce_sdk.session import FramePreparer

    cfg = from_name("tiny")
    s = cfg.stream.resolution
    rng = np.random.default_rng(int(size))
    frame = rng.integers(0, 256, (400, 360, 3), dtype=np.uint8)
    view = FramePreparer(cfg)(frame, FaceKeypoints.template((20, 30, 320, 330)))
    crop = AlignedCrop(view.crop.centre, view.crop.side, angle, s)
    soft = view.mask.soft
    w_frame = crop.frame_weight(soft, frame.shape[:2])
    pic = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = crop.paste(frame, pic, soft)
    assert np.array_equal(out[w_frame == 0], frame[w_frame == 0])
    assert np.any(out != frame, axis=-1)[w_frame > 0.1].mean() > 0.9  # and it pastes where the mask is
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (s, s, 3), dtype=np.uint8), (0, 0), 3.0)
    own = crop.paste(frame, smooth, soft)
    enlarged = crop.paste(frame, cv2.resize(smooth, (size, size), interpolation=cv2.INTER_CUBIC), soft)
    assert np.array_equal(own[w_frame == 0], enlarged[w_frame == 0])
    assert np.abs(own.astype(int) - enlarged)[w_frame > 0].max() <= 3
    with pytest.raises(ValueError, match="square"):
        crop.paste(frame, pic[:, :-1], soft)


def test_stream_exemplars_work_at_the_faces_own_size_where_it_is_larger_than_the_crop():
    """A face twice the model's crop in the frame: the stream's crops are kept at its own size
    (rounded up to 16, at most ``max_size``), the generated crop is enlarged to it and takes back
    the frame's fine detail, which the model's size cannot hold; nothing outside the mask moves."""
    from lipforce_sdk.exemplars import STREAM_CUTOFF, STREAM_LARGE, StreamExemplars
    from lipforce_sdk.geometry import FaceKeypoints
    from lipforce_sdk.session import ChunkRenderer, FramePreparer

    cfg, frames, views = _stream_setup(6, noise_seed=0, **LARGE)
    s = cfg.stream.resolution
    prep = FramePreparer(cfg)
    native = 16 * int(np.ceil(views[0].crop.side / 16))
    assert views[0].crop.side > 1.5 * s  # the face is larger in the frame than the model's crop
    ex = StreamExemplars(frames=50)
    r = ChunkRenderer(None, cfg, 0, exemplars=ex)
    for f, v in zip(frames[:5], views[:5]):
        r.composite(f, v, v.image)
    assert ex.size_for(views[0].crop) == native and ex.bank().images.shape[1:3] == (native, native)
    b = ex.bank()  # above the crop's size: the median of fewer, at larger key distances (STREAM_LARGE)
    assert (b.k, b.near, b.far, b.cutoff) == (STREAM_LARGE["k"], STREAM_LARGE["near"], STREAM_LARGE["far"],
                                              STREAM_CUTOFF)
    assert (b.k, b.near, b.far) != (MouthExemplars.k, MouthExemplars.near, MouthExemplars.far)
    gen = views[5].image  # the model's crop of the sixth frame: all it can hold at its size
    detailed = r.composite(frames[5], views[5], gen)
    plain = ChunkRenderer(None, cfg, 0).composite(frames[5], views[5], gen)
    w = views[5].crop.frame_weight(views[5].mask.soft, frames[5].shape[:2])
    assert np.array_equal(detailed[w == 0], frames[5][w == 0])

    def fine(img):  # the band a 128 px picture of this face cannot hold, inside the mask
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return (g - cv2.GaussianBlur(g, (0, 0), 1.5))[w > 0.9]

    truth = fine(frames[5])
    corr = [np.corrcoef(fine(x), truth)[0, 1] for x in (detailed, plain)]
    # twice the fine detail of the plain paste, no more than the frame has, and the frame's own
    # (unrelated detail would lower the correlation with it)
    assert 2.0 * fine(plain).var() < fine(detailed).var() < 1.2 * truth.var()
    assert corr[0] > corr[1] > 0.5
    small = StreamExemplars(frames=5, max_size=160)
    assert small.size_for(views[0].crop) == 160
    r2 = ChunkRenderer(None, cfg, 0, exemplars=small)
    r2.composite(frames[0], views[0], gen)
    r2.reset()
    assert small._size is None and small.count == 0
    tiny_face = prep(np.zeros((600, 560, 3), np.uint8), FaceKeypoints.template((100, 100, 300, 300)))
    base = {"k": MouthExemplars.k, "cutoff": STREAM_CUTOFF, "near": MouthExemplars.near, "far": MouthExemplars.far}
    at_crop = StreamExemplars(frames=5)
    assert at_crop.size_for(tiny_face.crop) == s and at_crop.settings == base  # no larger: the crop's size and settings
    ex.reset()  # a new stream starts from the base settings, whatever the last face was
    assert ex.settings == base and ex.size_for(tiny_face.crop) == s and ex.settings == base
    off = StreamExemplars(frames=5, large=None)
    assert off.size_for(views[0].crop) == native and off.settings == base
    with pytest.raises(ValueError, match="only k, near and far"):
        StreamExemplars(frames=5, large={"cutoff": 0.1})


def test_exemplar_cost_sample_prints_its_table(capsys):
    """``samples/exemplar_cost.py`` on the bundled photo clip (a face smaller than the crop: both
    exemplar settings work at the crop's size) prints one row per paste, with the detail each
    keeps; the exemplars give back detail that the plain paste of a softened crop lacks."""
    from conftest import load_sample

    mod = load_sample("exemplar_cost")
    assert mod.main(["--frames", "6", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[1].strip().split(" (")[0] for r in rows] == ["plain paste, the seam as drawn", "plain paste",
                                                           "exemplars at the crop", "exemplars at the face's size",
                                                           "the same with the crop's settings",
                                                           "the same, the whole picture refined"]
    assert [int(r[2]) for r in rows] == [128] * 6
    assert rows[3][5] == rows[4][5]  # a face no larger than the crop: the same settings either way
    assert "the paste's footprint: yes" in out
    detail = [float(r[5]) for r in rows]
    assert detail[2] > detail[1] + 0.1 and detail[3] > detail[1] + 0.1


def test_an_enrolled_avatars_exemplars_take_the_streams_detail_only_where_the_face_is_larger():
    """``LayeredExemplars``: where the face is no larger than the crop, the paste is exactly the
    enrolled exemplars' (the stream keeps nothing); where it is larger, the enrolled exemplars'
    picture is enlarged to the face's size and takes the stream's fine detail on top."""
    from lipforce_sdk.exemplars import LayeredExemplars, StreamExemplars
    from lipforce_sdk.session import ChunkRenderer

    cfg, frames, views = _stream_setup(6)  # a face no larger than the crop
    s = cfg.stream.resolution
    own = MouthExemplars.build(np.stack([cv2.resize(m, (s, s), interpolation=cv2.INTER_CUBIC) for m in mouths()]), k=1,
                               far=1e4)
    lay = LayeredExemplars(own, StreamExemplars(frames=50))
    r, r_own = ChunkRenderer(None, cfg, 0, exemplars=lay), ChunkRenderer(None, cfg, 0, exemplars=own)
    for f, v in zip(frames, views):
        gen = cv2.GaussianBlur(v.image, (0, 0), 1.5)
        assert np.array_equal(r.composite(f, v, gen), r_own.composite(f, v, gen))
    assert lay.stream.count == 0 and lay.size_for(views[0].crop) == s

    _, (frame,), (view,) = _stream_setup(images=mouths()[2:3], noise_seed=1, **LARGE)  # detail finer than the crop holds
    lay = LayeredExemplars(own, StreamExemplars(frames=50))
    r = ChunkRenderer(None, cfg, 0, exemplars=lay)
    gen = cv2.GaussianBlur(view.image, (0, 0), 1.5)
    first = r.composite(frame, view, gen)  # nothing held yet: the enrolled picture, enlarged
    size = lay.size_for(view.crop)
    assert size > s and lay.stream.count == 1
    gen_m = match_edge(gen, view.image, view.mask.hard)  # the paste matches the seam first (geometry.match_edge)
    expect = view.crop.paste(frame, cv2.resize(own.refine(gen_m), (size, size), interpolation=cv2.INTER_CUBIC), view.mask.soft)
    assert np.array_equal(first, expect)
    second = r.composite(frame, view, gen)  # the same frame held: its fine detail comes back
    w = view.crop.frame_weight(view.mask.soft, frame.shape[:2]) > 0.9
    err = [np.abs(x.astype(float) - frame)[w].mean() for x in (second, first)]
    assert err[0] < 0.8 * err[1]
    r.reset()
    assert lay.stream.count == 0


def _key_whole(crop):
    """``mouth_key`` as it was first written: the whole crop blurred, then the box cut."""
    from lipforce_sdk.exemplars import KEY_BLUR, KEY_HW, _key_box

    s = crop.shape[0]
    g = cv2.GaussianBlur(np.asarray(crop, np.float32), (0, 0), KEY_BLUR * s)
    y0, y1, x0, x1 = _key_box(s)
    return cv2.resize(g[y0:y1, x0:x1], KEY_HW[::-1], interpolation=cv2.INTER_AREA).reshape(-1)


@pytest.mark.parametrize("size", [64, 128, 208, 512])
def test_the_key_and_the_refinement_of_a_window_equal_the_whole_crops(size):
    """Only the key box's window is blurred for the key, and ``refine(gen, region)`` works on the region's
    window: bit for bit the values of the whole crop's, the rest of the crop is ``gen`` untouched."""
    rng = np.random.default_rng(size)
    crops = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC) for m in mouths()])
    crops = np.clip(crops.astype(np.int16) + rng.integers(-20, 21, crops.shape), 0, 255).astype(np.uint8)
    for c in crops[:3]:
        assert np.array_equal(mouth_key(c), _key_whole(c))
    ex = MouthExemplars.build(crops[1:], k=3, far=1e4)
    gen = cv2.GaussianBlur(crops[0], (0, 0), 1.5)
    whole = ex.refine(gen)
    assert not np.array_equal(whole, gen)
    for region in [(0, size, 0, size), (size // 3, size // 2, size // 4, 3 * size // 4), (0, 5, size - 7, size),
                   (size // 2, size, 0, size // 3), (3, 3, 0, size)]:
        y0, y1, x0, x1 = region
        part = ex.refine(gen, region)
        inside = np.zeros((size, size), bool)
        inside[y0:y1, x0:x1] = True
        assert np.array_equal(part[inside], whole[inside]), region
        assert np.array_equal(part[~inside], gen[~inside]), region


def test_the_paste_footprint_holds_every_pixel_the_paste_reads():
    """``AlignedCrop.paste_footprint``: a picture changed anywhere outside it pastes to the same frame,
    at the crop's size and at others, for faces smaller and larger than the crop, rolled, at the frame's edge."""
    from lipforce_sdk.geometry import AlignedCrop

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    s = 64
    yy, xx = np.mgrid[0:s, 0:s]
    checked = 0
    for centre, side, angle, pic_size in [((160, 150), 60.0, 0.0, 64), ((160, 150), 30.0, 0.3, 64),
                                          ((150, 140), 140.0, -0.2, 144), ((150, 140), 140.0, 0.5, 256),
                                          ((10, 290), 90.0, 0.1, 96), ((300, 20), 20.0, -0.6, 80),
                                          ((160, 150), 250.0, 0.05, 64)]:
        crop = AlignedCrop(centre, side, angle, s)
        for cy, cx, ry, rx in [(40, 32, 9, 14), (5, 60, 6, 6), (32, 32, 40, 40)]:
            w = np.clip(1.5 - np.hypot((yy - cy) / ry, (xx - cx) / rx), 0, 1).astype(np.float32)
            fp = crop.paste_footprint(w, pic_size)
            y0, y1, x0, x1 = fp
            assert 0 <= y0 < y1 <= pic_size and 0 <= x0 < x1 <= pic_size
            pic = rng.integers(0, 256, (pic_size, pic_size, 3), dtype=np.uint8)
            other = rng.integers(0, 256, pic.shape, dtype=np.uint8)
            other[y0:y1, x0:x1] = pic[y0:y1, x0:x1]
            assert np.array_equal(crop.paste(frame, pic, w), crop.paste(frame, other, w)), (centre, side, angle, fp)
            checked += 1
    assert crop.paste_footprint(np.zeros((s, s), np.float32)) is None
    assert checked == 21


@pytest.mark.parametrize("case", ["enrolled", "stream", "stream, large face", "layered", "layered, large face"])
def test_sessions_paste_the_same_frames_when_the_exemplars_stop_at_the_paste_footprint(case):
    """``composite`` hands the mask's weights to the exemplars, which then refine only what the paste
    reads: every frame equals the one pasted from the whole crop's refinement."""
    from lipforce_sdk.exemplars import LayeredExemplars, StreamExemplars
    from lipforce_sdk.session import ChunkRenderer

    large = "large" in case
    cfg, frames, views = (_stream_setup(images=mouths(6), noise_seed=1, **LARGE) if large else _stream_setup(6))
    s = cfg.stream.resolution
    own = MouthExemplars.build(np.stack([cv2.resize(m, (s, s), interpolation=cv2.INTER_CUBIC) for m in mouths()]), k=3,
                               far=1e4)

    def make():
        if case == "enrolled":
            return own
        stream = StreamExemplars(frames=50)
        return stream if case.startswith("stream") else LayeredExemplars(own, stream)

    ex_w, ex_whole = make(), make()
    r = ChunkRenderer(None, cfg, 0, exemplars=ex_w)
    for i, (f, v) in enumerate(zip(frames, views)):
        gen = cv2.GaussianBlur(views[(i + 2) % len(views)].image, (0, 0), 1.5)
        got = r.composite(f, v, gen)
        want = v.crop.paste(f, ex_whole.detail(match_edge(gen, v.image, v.mask.hard), v.crop), v.mask.soft)
        if hasattr(ex_whole, "add"):
            ex_whole.add(f, v.crop)
        assert np.array_equal(got, want), (case, i)
    if case != "enrolled":
        assert (ex_w.stream if hasattr(ex_w, "stream") else ex_w).count == (0 if case == "layered" else 6)


@pytest.mark.parametrize("case", ["none", "enrolled", "stream", "stream, repeats", "stream, large face", "layered",
                                  "layered, large face"])
def test_a_chunks_frames_pasted_on_threads_equal_one_after_another(case, monkeypatch):
    """``composite_many`` pastes a chunk's frames on the composite threads, while the stream's exemplars
    gather (each frame refined from the crops held before its own, ``add_many``) and after: the same
    frames as ``composite`` one by one."""
    from lipforce_sdk import session as sess
    from lipforce_sdk.exemplars import LayeredExemplars, StreamExemplars
    from lipforce_sdk.session import ChunkRenderer

    large = "large" in case
    cfg, frames, views = (_stream_setup(n=10, images=mouths(10), noise_seed=1, **LARGE) if large
                          else _stream_setup(10))
    if "repeats" in case:  # a frame shown twice in a chunk is kept once: the later frames' counts shift
        frames[1], views[1], frames[5], views[5] = frames[0], views[0], frames[2], views[2]
    s = cfg.stream.resolution
    own = MouthExemplars.build(np.stack([cv2.resize(m, (s, s), interpolation=cv2.INTER_CUBIC) for m in mouths()]), k=3,
                               far=1e4)

    def make():
        if case in ("none", "enrolled"):
            return None if case == "none" else own
        stream = StreamExemplars(frames=3)  # full after the first chunk's frames
        return stream if case.startswith("stream") else LayeredExemplars(own, stream)

    gens = [cv2.GaussianBlur(views[(i + 2) % len(views)].image, (0, 0), 1.5) for i in range(len(views))]
    where: list[str] = []

    def spy(fn):
        def wrapped(self, *a):
            where.append(threading.current_thread().name)
            return fn(self, *a)
        return wrapped

    # a frame's paste, after the gathering and during it (then with the count held before it)
    monkeypatch.setattr(ChunkRenderer, "composite", spy(ChunkRenderer.composite))
    monkeypatch.setattr(sess, "COMPOSITE_THREADS_MIN_SIDE", 0)  # these pictures are small: thread them anyway
    runs, gathering, threaded = {}, [], []
    for threads in (1, 4):
        monkeypatch.setenv(sess.COMPOSITE_THREADS_ENV, str(threads))
        r = ChunkRenderer(None, cfg, 0, exemplars=make())
        out = []
        for k in range(0, len(frames), 4):
            if threads == 4:
                gathering.append(bool(getattr(r.exemplars, "gathering", False)))
            where.clear()
            out += r.composite_many(frames[k:k + 4], views[k:k + 4], gens[k:k + 4])
            if threads == 4:
                threaded.append(len(where) == len(frames[k:k + 4])
                                and all(n.startswith("lipforce-composite") for n in where))
        runs[threads] = out
    assert len(runs[4]) == len(frames)
    for i, (a, b) in enumerate(zip(runs[1], runs[4])):
        assert np.array_equal(a, b), (case, i)
    # where the stream's exemplars may gather, the first chunk gathers (before its first frame, not even
    # the size they are kept at is known); every chunk's frames are pasted on the threads all the same
    assert gathering == [case not in ("none", "enrolled"), False, False], gathering
    assert threaded == [True, True, True], threaded
    # with the default threshold a picture this small (the crop's 128 px) is pasted on the caller's thread
    monkeypatch.setattr(sess, "COMPOSITE_THREADS_MIN_SIDE", 192)
    where.clear()
    r.composite_many(frames[:4], views[:4], gens[:4])
    assert r._picture_side(views[0]) >= 192 or not any(n.startswith("lipforce-composite") for n in where)


def test_frames_without_a_face_come_back_as_they_are_from_threaded_pastes(monkeypatch):
    from lipforce_sdk import session as sess
    from lipforce_sdk.session import ChunkRenderer

    cfg, frames, views = _stream_setup(4)
    gens = [cv2.GaussianBlur(v.image, (0, 0), 1.5) for v in views]
    monkeypatch.setattr(sess, "COMPOSITE_THREADS_MIN_SIDE", 0)
    monkeypatch.setenv(sess.COMPOSITE_THREADS_ENV, "4")
    r = ChunkRenderer(None, cfg, 0)
    vs = [views[0], None, views[2], None]
    out = r.composite_many(frames, vs, [gens[0], None, gens[2], None])
    assert out[1] is frames[1] and out[3] is frames[3]
    assert all(np.array_equal(out[j], r.composite(frames[j], views[j], gens[j])) for j in (0, 2))
    assert all(a is b for a, b in zip(r.composite_many(frames, [None] * 4, None), frames))


def test_composite_threads_come_from_the_environment_and_bad_values_are_refused(monkeypatch):
    from lipforce_sdk import session as sess
    from lipforce_sdk.session import InputError

    monkeypatch.setenv(sess.COMPOSITE_THREADS_ENV, "3")
    assert sess.composite_threads() == 3 and sess._composite_pool()._max_workers == 3
    monkeypatch.setenv(sess.COMPOSITE_THREADS_ENV, "1")
    assert sess.composite_threads() == 1 and sess._composite_pool() is None
    monkeypatch.delenv(sess.COMPOSITE_THREADS_ENV)
    assert 1 <= sess.composite_threads() <= 4
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(sess.COMPOSITE_THREADS_ENV, bad)
        with pytest.raises(InputError, match=sess.COMPOSITE_THREADS_ENV):
            sess.composite_threads()


def test_the_models_pixels_are_the_plain_formula():
    """``ChunkRenderer._pixels`` (written in place) gives the frames in [-1, 1] and the masked frames
    exactly as the plain NumPy formula does."""
    from lipforce_sdk.session import ChunkRenderer

    cfg, frames, views = _stream_setup(4)
    full, src = ChunkRenderer(None, cfg, 0)._pixels(views)
    x = np.stack([v.image for v in views]).astype(np.float32) / 127.5 - 1.0
    keep = 1.0 - np.stack([v.mask.hard for v in views])[..., None]
    assert full.dtype == src.dtype == np.float32 and full.flags.c_contiguous and src.flags.c_contiguous
    assert np.array_equal(full, x.transpose(3, 0, 1, 2)[None])
    assert np.array_equal(src, (x * keep).transpose(3, 0, 1, 2)[None])
    assert (src[0][:, np.stack([v.mask.hard for v in views]) > 0] == 0).all() and (src != full).any()


def test_host_cost_sample_prints_its_table_and_the_frames_agree(capsys):
    from conftest import load_sample

    hc = load_sample("host_cost")
    assert hc.main(["--preset", "tiny", "--seconds", "3", "--repeats", "1", "--threads", "1,2"]) == 0
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith("| 1 |") or r.startswith("| 2 |")]
    assert len(rows) == 2 and all(float(r.split("|")[2]) > 0 for r in rows), out
    assert "frames the same with every thread count: yes" in out


def test_a_forked_child_pastes_on_threads_of_its_own():
    """The composite threads do not survive a fork: a child process makes its own pool (a pool
    inherited without its threads would never run the work)."""
    import multiprocessing as mp
    import os

    from lipforce_sdk import session as sess

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("this platform cannot fork")
    os.environ[sess.COMPOSITE_THREADS_ENV] = "2"
    try:
        parent = sess._composite_pool()
        both = threading.Barrier(2)  # both of the pool's threads are started (and idle) in the parent
        assert list(parent.map(lambda x: (both.wait(timeout=30), abs(x))[1], [-1, -2])) == [1, 2]
        assert len(parent._threads) == 2
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as p:
            got = p.apply_async(_child_pool_works).get(timeout=30)
        assert got == [1, 2, 3]
    finally:
        del os.environ[sess.COMPOSITE_THREADS_ENV]


def _child_pool_works():
    from lipforce_sdk import session as sess

    return list(sess._composite_pool().map(abs, [-1, -2, -3]))


def test_the_paste_matches_the_seam_and_leaves_the_frame_outside_the_mask(monkeypatch):
    """A generated crop off in shading (+12 levels) is matched to the frame at the mask's edge before
    the paste (``LIPFORCE_EDGE_MATCH``, on by default): the seam comes closer to the frame, and outside
    the mask the frame is the same bit for bit with the match and without it; a bad setting is refused."""
    from lipforce_sdk import session as sess
    from lipforce_sdk.session import ChunkRenderer, InputError

    cfg, frames, views = _stream_setup(1)
    frame, view = frames[0], views[0]
    gen = np.clip(view.image.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    out = {}
    for on in ("0", "1"):
        monkeypatch.setenv(sess.EDGE_MATCH_ENV, on)
        r = ChunkRenderer(None, cfg, 0, exemplars=None)
        assert r.edge_match is (on == "1")
        out[on] = r.composite(frame, view, gen).astype(np.int16)
    footprint = view.crop.frame_weight(view.mask.hard, frame.shape[:2]) > 0
    for o in out.values():
        assert np.array_equal(o[~footprint], frame[~footprint])
    soft = view.crop.frame_weight(view.mask.soft, frame.shape[:2])
    seam = footprint & (soft > 0.05) & (soft < 0.5)  # the feathered edge: frame and model both show there
    err = {k: np.abs(o[seam] - frame[seam].astype(np.int16)).mean() for k, o in out.items()}
    assert seam.any() and err["1"] < 0.5 * err["0"], err
    monkeypatch.setenv(sess.EDGE_MATCH_ENV, "yes")
    with pytest.raises(InputError, match="LIPFORCE_EDGE_MATCH"):
        ChunkRenderer(None, cfg, 0)


def test_the_paste_keeps_the_mouth_no_greener_than_the_face(monkeypatch):
    """A generated crop with a grey-green band across the mouth (what the general model draws where
    an open mouth's teeth belong) is pasted with that band taken to the face's own colour range
    (``LIPFORCE_GREEN_LIMIT``, on by default; ``geometry.limit_green``); off, as drawn; outside the
    mask the frame is the same bit for bit either way; a bad setting is refused."""
    from lipforce_sdk import session as sess
    from lipforce_sdk.session import ChunkRenderer, InputError

    cfg, frames, views = _stream_setup(1)
    frame, view = frames[0], views[0]
    kc = view.keypoints.map(view.crop.to_crop_affine())
    cx, cy = kc.mouth_corners.mean(0).astype(int)
    gen = view.image.copy()
    gen[cy - 2:cy + 2, cx - 8:cx + 8] = (120, 180, 160)
    band = np.zeros(gen.shape[:2], np.float32)
    band[cy - 2:cy + 2, cx - 8:cx + 8] = 1
    at = view.crop.frame_weight(band * view.mask.soft, frame.shape[:2]) > 0.9  # the band where it is pasted whole
    monkeypatch.setenv(sess.EDGE_MATCH_ENV, "0")
    out = {}
    for on in ("0", "1"):
        monkeypatch.setenv(sess.GREEN_LIMIT_ENV, on)
        r = ChunkRenderer(None, cfg, 0, exemplars=None)
        assert r.green_limit is (on == "1")
        out[on] = r.composite(frame, view, gen).astype(np.int16)
    footprint = view.crop.frame_weight(view.mask.hard, frame.shape[:2]) > 0
    for o in out.values():
        assert np.array_equal(o[~footprint], frame[~footprint])
    green = {k: (o[at][:, 1] - o[at][:, 0]) for k, o in out.items()}
    own = frame[footprint].astype(np.int16)
    assert at.any() and green["0"].min() > 25, green["0"].min()  # as drawn: the band's green (resampled)
    assert green["1"].max() <= max(int((own[:, 1] - own[:, 0]).max()), 0) + 6, green["1"].max()
    monkeypatch.setenv(sess.GREEN_LIMIT_ENV, "yes")
    with pytest.raises(InputError, match="LIPFORCE_GREEN_LIMIT"):
        ChunkRenderer(None, cfg, 0)
