"""The demo scenes: grammar, renderer and analytic checker agree on rendered ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from longlive_runner.demo import checker, scenes
from longlive_runner.demo.scenes import Scene


def test_prompt_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sc = scenes.sample_scene(rng)
        assert scenes.parse_prompt(sc.prompt) == sc
    sc = scenes.parse_prompt("  An ORANGE triangle moving up on a dark  green background ")
    assert sc == Scene("orange", "triangle", "up", "dark green")
    assert scenes.format_prompt(sc) == "a orange triangle moving up on a dark green background"
    with pytest.raises(ValueError):
        scenes.parse_prompt("a purple circle moving left on a black background")
    with pytest.raises(ValueError):
        scenes.parse_prompt("a cat")
    assert {"dark", "green", "navy", "triangle", "moving"} <= set(scenes.vocabulary())


def test_schedule_switches_at_block_boundaries():
    rng = np.random.default_rng(1)
    for _ in range(20):
        sch = scenes.sample_schedule(rng, 10, switch_prob=0.5, kinds=scenes.SWITCH_KINDS)
        assert 0 in sch and all(t % 3 == 0 for t in sch)
        times = sorted(sch)
        for a, b in zip(times[:-1], times[1:]):
            old, new = scenes.parse_prompt(sch[a]), scenes.parse_prompt(sch[b])
            diff = [
                f for f in ("color", "shape", "direction", "background") if getattr(old, f) != getattr(new, f)
            ]
            assert len(diff) == 1


def test_frame_layout():
    assert scenes.num_video_frames(3) == 9 and scenes.num_video_frames(6) == 21
    assert scenes.block_video_range(0) == (0, 9) and scenes.block_video_range(3) == (9, 21)
    assert [scenes.latent_of_video_frame(j) for j in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_render_motion_and_switch_keeps_place():
    sch = {
        0: "a red circle moving right on a black background",
        6: "a blue circle moving down on a black background",
    }
    clip = scenes.render(sch, 12, 64, 64)
    assert clip.frames.shape == (scenes.num_video_frames(12), 64, 64, 3) and clip.frames.dtype == np.uint8
    first_new = scenes.block_video_range(6)[0]
    p = clip.positions
    step = (np.diff(p[:first_new], axis=0) + 32.0) % 64.0 - 32.0  # wrapped on the 64-px torus
    assert np.allclose(step[:, 0], 2.0) and np.allclose(step[:, 1], 0.0)
    # the switch frame continues from the previous place, one step in the new direction
    assert np.allclose(p[first_new] - p[first_new - 1], (0.0, 2.0))
    assert clip.scenes[first_new - 1].color == "red" and clip.scenes[first_new].color == "blue"
    # background is plain, object pixels have the object colour
    assert (clip.frames[0, 0, 0] == 0).all() and tuple(clip.frames[0, 32, 32]) == (255, 0, 0)


@pytest.mark.parametrize("size", [(64, 64), (64, 112)])
def test_checker_is_exact_on_clean_renders(size):
    h, w = size
    rng = np.random.default_rng(2)
    for _ in range(6):
        sch = scenes.sample_schedule(rng, 8, switch_prob=0.5, kinds=scenes.SWITCH_KINDS)
        clip = scenes.render(sch, 24, h, w)
        sc = checker.score(clip.frames, sch)
        assert sc.color_acc == 1.0 and sc.background_acc == 1.0 and sc.direction_acc == 1.0, sc.summary()
        assert len(sc.blocks) == 8
        for sw in sc.switches:
            assert all(v == 0 for v in sw.latency.values()) and all(sw.holds.values()), sc.summary()


def test_checker_handles_wrap_around():
    # long enough to cross every edge several times in both axes
    for d in scenes.DIRECTIONS:
        for shape in scenes.SHAPES:
            sch = {0: f"a yellow {shape} moving {d} on a navy background"}
            clip = scenes.render(sch, 48, 64, 64)
            sc = checker.score(clip.frames, sch)
            assert sc.color_acc == sc.background_acc == sc.direction_acc == 1.0, (d, shape, sc.summary())
            for bl in sc.blocks[1:]:
                step = abs(bl.motion[0]) + abs(bl.motion[1])
                assert step == pytest.approx(11 * 2.0, abs=1.0)


def test_every_colour_on_every_background():
    for bg in scenes.BACKGROUNDS:
        for c in scenes.COLORS:
            f = scenes.render_frame(
                Scene(c, "triangle", "left", bg), 3.0, 60.0, 64, 64, scenes.Style.for_size(64, 64)
            )
            m = checker.measure_frame(f)
            assert (m.color, m.background) == (c, bg)
            assert m.centroid is not None


def test_switch_detected_at_the_right_frame():
    sch = {
        0: "a red square moving left on a gray background",
        9: "a blue square moving left on a gray background",
    }
    clip = scenes.render(sch, 18, 64, 64)
    sc = checker.score(clip.frames, sch)
    first_new = scenes.block_video_range(9)[0]
    assert set(sc.frame_colors[:first_new]) == {"red"} and set(sc.frame_colors[first_new:]) == {"blue"}
    assert sc.switches[0].latency == {"color": 0} and sc.switches[0].holds == {"color": True}
    # a video that shows the switch one block late is caught
    late = clip.frames.copy()
    late[first_new : first_new + 12] = scenes.render({0: sch[0]}, 18, 64, 64).frames[
        first_new : first_new + 12
    ]
    sc2 = checker.score(late, sch)
    assert sc2.switches[0].latency == {"color": 1} and sc2.switches[0].holds == {"color": False}
    assert sc2.color_acc < 1.0


def test_blank_frame_has_no_object():
    m = checker.measure_frame(np.zeros((64, 64, 3), np.uint8))
    assert m.color is None and m.centroid is None and m.background == "black"


@pytest.mark.parametrize("size", [(64, 64), (64, 112)])
def test_checker_tells_the_shapes_apart_anywhere(size):
    h, w = size
    style = scenes.Style.for_size(h, w)
    rng = np.random.default_rng(4)
    for shape in scenes.SHAPES:
        for _ in range(12):  # anywhere on the torus, split over the edges included
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            scene = Scene(
                str(rng.choice(list(scenes.COLORS))), shape, "up", str(rng.choice(list(scenes.BACKGROUNDS)))
            )
            m = checker.measure_frame(scenes.render_frame(scene, x, y, h, w, style), style=style)
            assert m.shape == shape, (shape, x, y, scene)
            assert m.stray == 0


def test_a_blob_is_not_a_square_or_a_triangle():
    """What the old demo drew for every shape word: a rounded blob (a blurred circle)."""
    style = scenes.Style.for_size(64, 64)
    sharp = scenes.render_frame(Scene("white", "circle", "right", "gray"), 30.0, 33.0, 64, 64, style)
    blob = sharp.astype(np.float32)
    for _ in range(2):  # a 3x3 box blur, twice
        blob = sum(np.roll(np.roll(blob, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    m = checker.measure_frame(np.round(blob).astype(np.uint8), style=style)
    assert m.shape == "circle"
    sq = scenes.render_frame(Scene("white", "square", "right", "gray"), 30.0, 33.0, 64, 64, style)
    assert checker.measure_frame(sq, style=style).shape == "square"


def test_glide_catches_hops_and_switch_cleanliness_catches_jump_blend_and_ghost():
    sch = {
        0: "a red square moving right on a black background",
        6: "a blue square moving right on a black background",
    }
    clip = scenes.render(sch, 12, 64, 64)
    style = scenes.Style.for_size(64, 64)
    good = checker.score(clip.frames, sch)
    assert good.glide_acc == 1.0 and good.shape_acc == 1.0
    assert good.frame_shapes == [("square", "square")] * len(clip.frames)
    assert [sw.clean for sw in good.switches] == [True]
    # the same squares scored against triangle prompts: every frame read as what it shows
    as_triangles = {t: p.replace("square", "triangle") for t, p in sch.items()}
    wrong = checker.score(clip.frames, as_triangles)
    assert wrong.shape_acc == 0.0 and wrong.frame_shapes == [("triangle", "square")] * len(clip.frames)

    # hops: each latent frame's 4 video frames show one place (what a decoder of 4-frame means does)
    hops = clip.frames.copy()
    for j in range(1, len(hops)):
        hops[j] = clip.frames[4 * scenes.latent_of_video_frame(j)]
    assert checker.score(hops, sch).glide_acc < 0.3

    j0 = scenes.block_video_range(6)[0]
    blue, red = Scene("blue", "square", "right", "black"), Scene("red", "square", "right", "black")
    x, y = clip.positions[j0]
    # a jump: the first new frame 8 px ahead
    jump = clip.frames.copy()
    jump[j0] = scenes.render_frame(blue, (x + 8.0) % 64, y, 64, 64, style)
    sw = checker.score(jump, sch).switches[0]
    assert (sw.no_jump, sw.no_blend, sw.no_ghost) == (False, True, True)
    # a blend: the first new frame half red, half blue
    blend = clip.frames.copy()
    mix = 0.5 * scenes.render_frame(red, x, y, 64, 64, style).astype(np.float32) + 0.5 * clip.frames[j0]
    blend[j0] = np.round(mix).astype(np.uint8)
    sw = checker.score(blend, sch).switches[0]
    assert (sw.no_jump, sw.no_blend, sw.no_ghost) == (True, False, True)
    # a ghost: a faint copy of the old red square left behind at the old place for 2 frames
    ghost = clip.frames.copy()
    for j in (j0, j0 + 1):
        old = scenes.render_frame(red, (x - 12.0) % 64, y, 64, 64, style).astype(np.float32)
        ghost[j] = np.maximum(ghost[j], np.round(0.2 * old).astype(np.uint8))
    sw = checker.score(ghost, sch).switches[0]
    assert (sw.no_jump, sw.no_blend, sw.no_ghost) == (True, True, False)
