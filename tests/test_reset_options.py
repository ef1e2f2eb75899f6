"""``reset(options={"snippet": ..., "start_step": ...})`` of the tracking envs: the choice is made on both backends
and in the native vector env alike, and a bad option is refused naming the value and the valid choices."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mocapact_envs  # noqa: F401  (registers the ids)
from mocapact_envs.envs.tracking import RESET_OPTIONS

CLIPS = ["CMU_016_22", "CMU_009_12-165-363"]  # CMU_016_22 is CMU_016_22-0-85
BACKENDS = ("fast", "dm_control")


def make(backend: str = "fast", clips=CLIPS, **kwargs):
    return gym.make("mocapact/MocapTracking-v0", clips=clips, backend=backend, **kwargs)


def start_step(env, info) -> int:
    """The clip step an episode started at, from its info."""
    snippet = env.unwrapped.clip_set.snippets[info["snippet_index"]]
    return round(snippet.start + info["start_time_in_clip"] * (snippet.end - snippet.start))


@pytest.mark.parametrize(
    "options, snippet, step",
    [
        ({"snippet": "CMU_009_12-165-363", "start_step": 200}, 1, 200),
        ({"snippet": 1, "start_step": 165}, 1, 165),
        ({"snippet": "CMU_016_22", "start_step": 74}, 0, 74),  # a clip id with one snippet in the set
        ({"snippet": "CMU_016_22-0-85", "start_step": None}, 0, None),  # None: drawn as usual
    ],
)
def test_the_chosen_episode_starts_there_on_both_backends_alike(options, snippet, step):
    envs = [make(backend) for backend in BACKENDS]
    results = [env.reset(seed=3, options=options) for env in envs]
    for env, (_, info) in zip(envs, results, strict=True):
        assert info["snippet_index"] == snippet and env.unwrapped.snippet_id == env.unwrapped.snippet_ids[snippet]
        if step is not None:
            assert start_step(env, info) == step
    (fast_observation, fast_info), (reference_observation, reference_info) = results
    for key, value in reference_observation.items():
        np.testing.assert_allclose(fast_observation[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert fast_info["start_time_in_clip"] == reference_info["start_time_in_clip"]
    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (5, 56)).astype(np.float32)
    for action in actions:
        fast_step, reference_step = (env.step(action) for env in envs)
        np.testing.assert_allclose(fast_step[0]["walker/joints_pos"], reference_step[0]["walker/joints_pos"], 1e-5)
        assert fast_step[2:4] == reference_step[2:4]
    # The start was drawn as for any reset: both random states moved alike.
    assert envs[0].unwrapped.random_state.randint(10**9) == envs[1].unwrapped.random_state.randint(10**9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_chosen_snippet_draws_its_start_within_it(backend):
    env = make(backend)
    starts = set()
    for seed in range(8):
        _, info = env.reset(seed=seed, options={"snippet": "CMU_009_12-165-363"})
        assert info["snippet_index"] == 1
        starts.add(start_step(env, info))
    assert len(starts) > 4 and all(165 <= s <= 352 for s in starts), starts
    # With random_start=False a chosen snippet starts at its start, a chosen step anywhere valid.
    env = make(backend, random_start=False)
    _, info = env.reset(seed=0, options={"snippet": 1})
    assert info["snippet_index"] == 1 and info["start_time_in_clip"] == 0.0
    _, info = env.reset(seed=0, options={"snippet": 1, "start_step": 300})
    assert start_step(env, info) == 300


def test_the_choice_holds_for_one_reset_and_draws_as_any_reset():
    chosen, drawn = make(), make()
    chosen.reset(seed=5, options={"snippet": 0, "start_step": 10})
    drawn.reset(seed=5)
    for _ in range(4):  # the resets that follow are the same as if no option had been given
        (chosen_observation, chosen_info), (drawn_observation, drawn_info) = chosen.reset(), drawn.reset()
        assert chosen_info["snippet_index"] == drawn_info["snippet_index"]
        assert chosen_info["start_time_in_clip"] == drawn_info["start_time_in_clip"]
        np.testing.assert_array_equal(chosen_observation["walker/joints_pos"], drawn_observation["walker/joints_pos"])


def test_one_snippet_needs_no_snippet_option_and_the_range_ends_are_valid():
    env = gym.make("mocapact/MocapTracking-CMU_016_22-v0", ref_steps=(1, 2, 3), min_steps=5)
    # CMU_016_22-0-85 looks 3 steps ahead: its last trackable step is 82, its last start 82 - 5 - 1.
    for step in (0, 76):
        _, info = env.reset(seed=0, options={"start_step": step})
        assert start_step(env, info) == step
    with pytest.raises(ValueError, match=r"'start_step' 77 is not a start of snippet CMU_016_22-0-85: choose a clip "
                       r"step from 0 to 76 \(a start leaves min_steps=5 steps before the snippet's last trackable "
                       r"step, 82, with ref_steps=\(1, 2, 3\)\)"):  # fmt: skip
        env.reset(options={"start_step": 77})


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"snipet": 1}, ValueError, r"unknown option\(s\) 'snipet'; its options are 'snippet', 'start_step'\."),
        ({"seed": 1}, ValueError, r"unknown option\(s\) 'seed'; its options are 'snippet', 'start_step'\."),
        (
            {"snippet": "CMU_009_21"},
            ValueError,
            r"'snippet' 'CMU_009_21' is not a snippet of this environment\. Did you mean CMU_009_12-165-363\? Its "
            r"snippets are 'CMU_016_22-0-85', 'CMU_009_12-165-363' \(or their index, 0 to 1\)\.",
        ),
        ({"snippet": 2}, ValueError, r"'snippet' 2 is no index of its 2 snippet\(s\): choose 0 to 1"),
        ({"snippet": -1}, ValueError, r"'snippet' -1 is no index of its 2 snippet\(s\): choose 0 to 1"),
        ({"snippet": True}, TypeError, r"'snippet' must be a snippet id or an index .*, got True \(bool\)"),
        ({"snippet": 1.0}, TypeError, r"'snippet' must be a snippet id or an index .*, got 1\.0 \(float\)"),
        ({"start_step": 3}, ValueError, r"'start_step' needs the option 'snippet' too: this environment tracks 2"),
        (
            {"snippet": 1, "start_step": 164},
            ValueError,
            r"'start_step' 164 is not a start of snippet "
            r"CMU_009_12-165-363: choose a clip step from 165 to 352",
        ),  # fmt: skip
        ({"snippet": 0, "start_step": "10"}, TypeError, r"'start_step' '10' \(str\) is not a start of snippet"),
        ({"snippet": 0, "start_step": 2.5}, TypeError, r"'start_step' 2\.5 \(float\) is not a start of snippet"),
    ],
)
def test_bad_options_name_the_value_and_the_valid_choices(options, error, message):
    env = make()
    with pytest.raises(error, match=message):
        env.reset(seed=0, options=options)
    env.reset(seed=0)  # the env is still usable


def test_a_clip_with_several_snippets_must_be_named_by_snippet():
    env = make(clips=["CMU_009_12-0-160", "CMU_009_12-165-363"])
    with pytest.raises(ValueError, match=r"'snippet' 'CMU_009_12' is a clip with 2 snippets here; name one of "
                       r"'CMU_009_12-0-160', 'CMU_009_12-165-363'\."):  # fmt: skip
        env.reset(options={"snippet": "CMU_009_12"})


def test_the_vector_env_chooses_the_episode_of_every_world_reset():
    num_envs = 3
    envs = gym.make_vec(
        "mocapact/MocapTracking-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", clips=CLIPS
    )
    single = make()
    options = {"snippet": "CMU_009_12-165-363", "start_step": 250}
    observation, info = envs.reset(seed=2, options=options)
    np.testing.assert_array_equal(info["snippet_index"], [1, 1, 1])
    _, single_info = single.reset(seed=2, options=options)
    np.testing.assert_array_equal(info["start_time_in_clip"], single_info["start_time_in_clip"])
    # Drawn within the snippet, world by world as single envs seeded seed + i draw.
    observation, info = envs.reset(seed=4, options={"snippet": 0})
    for world in range(num_envs):
        single_observation, single_info = single.reset(seed=4 + world, options={"snippet": 0})
        assert info["snippet_index"][world] == 0
        assert info["start_time_in_clip"][world] == single_info["start_time_in_clip"]
        np.testing.assert_allclose(observation["walker/joints_pos"][world], single_observation["walker/joints_pos"])
    # With reset_mask only the masked worlds take the choice.
    before = info["start_time_in_clip"].copy()
    mask = np.array([False, True, False])
    _, info = envs.reset(options={"reset_mask": mask, "snippet": 1, "start_step": 200})
    assert info["snippet_index"][1] == 1 and np.isclose(info["start_time_in_clip"][1], 35 / 198)
    np.testing.assert_array_equal(info["start_time_in_clip"][~mask], before[~mask])
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'mask'; its options are 'snippet', 'start_step', "
                       r"'reset_mask'\."):  # fmt: skip
        envs.reset(options={"mask": mask})
    with pytest.raises(ValueError, match=r"'start_step' 400 is not a start of snippet CMU_009_12-165-363"):
        envs.reset(options={"snippet": 1, "start_step": 400})
    envs.close()


def test_the_options_are_documented():
    doc = mocapact_envs.MocapTrackingEnv.__doc__
    assert "Reset options:" in doc and all(f"``{key}``" in doc for key in RESET_OPTIONS)
    assert 'reset(options={"snippet": ..., "start_step": ...})' in doc.split("Version history:")[1]
