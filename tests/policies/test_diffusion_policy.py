import numpy as np
import pytest
import torch

from worldsim.core.normalizer import Normalizer
from worldsim.core.trainer import Trainer, TrainerConfig
from worldsim.policies.config import DiffusionPolicyConfig
from worldsim.policies.diffusion_policy import DiffusionPolicy
from worldsim.policies.strategies import STRATEGIES, make_strategy

OBS_DIM, ACTION_DIM, HORIZON, K = 4, 3, 8, 20
STRATEGY_KWARGS = {
    "ddpm": {},
    "ddim": {"steps": 5},
    "rti": {"k": 3},
    "rolling": {"first_steps": 5},
    "rtc": {"steps": 5},
}


def make_policy(
    discrete_rule="scale", seed=0, obs_type="state", discrete_dims=(2,), relative=False, angle_dims=(), per_step=False
) -> DiffusionPolicy:
    """``relative``: the first two action dimensions relative to observation dimensions 0 and 1, with an
    action normalizer per chunk position (how relative policies are trained). ``angle_dims``: observation
    dimensions the encoder sees as sine and cosine. ``per_step``: conditioning projected per chunk position."""
    torch.manual_seed(seed)
    obs_shape = (OBS_DIM,) if obs_type == "state" else (16, 16, 3)
    config = DiffusionPolicyConfig(
        obs_shape=obs_shape, action_dim=ACTION_DIM, obs_type=obs_type, horizon=HORIZON, n_action_steps=4,
        num_train_steps=K, width=32, depth=2, heads=2, obs_feature_dim=32, discrete_dims=discrete_dims,
        discrete_rule=discrete_rule, relative_to_obs=(0, 1, -1) if relative else (), angle_dims=angle_dims,
        per_step_conditioning=per_step,
        # Relative targets move with the observation, so they may leave [-1, 1]; returned actions are clipped
        # to the action space, which should not hide that movement.
        action_low=(-5, -5, -1) if relative else (-1, -1, -1), action_high=(5, 5, 1) if relative else (1, 1, 1),
        parameterization="epsilon", normalization="minmax", clip_sample=1.0,  # as the normalizers fitted below
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    obs_norm = Normalizer.fit(rng.normal(size=(100, OBS_DIM))) if obs_type == "state" else None
    rows = (100, HORIZON) if relative else (100,)
    actions = np.concatenate([rng.uniform(-1, 1, (*rows, 2)), rng.choice([-1.0, 1.0], (*rows, 1))], -1)
    policy = DiffusionPolicy(config, obs_normalizer=obs_norm, action_normalizer=Normalizer.fit(actions))
    with torch.no_grad():  # an untrained adaLN-zero net predicts zeros; make the outputs depend on the weights
        for p in policy.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy.eval()


def run_episode(policy, steps=12, seed=0):
    rng = np.random.default_rng(seed)
    policy.reset()
    actions, calls = [], []
    for _ in range(steps):
        actions.append(policy.select_action(rng.normal(size=OBS_DIM).astype(np.float32)))
        calls.append(policy.calls_last_prediction)
    return np.stack(actions), calls


@pytest.mark.parametrize("per_step", [False, True], ids=["shared-cond", "per-step-cond"])
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_runs_the_control_api(name, per_step):
    policy = make_policy(per_step=per_step)
    policy.set_strategy(name, **STRATEGY_KWARGS[name])
    actions, calls = run_episode(policy)
    assert actions.shape == (12, ACTION_DIM) and actions.dtype == np.float32
    assert np.isfinite(actions).all()
    assert set(np.unique(actions[:, 2])) <= {-1.0, 1.0}  # the discrete gripper is exactly ±1
    expected_first = {"ddpm": K, "ddim": 5, "rti": K, "rolling": 5, "rtc": 5}[name]
    assert calls[0] == expected_first
    if name == "rti":
        assert policy.n_action_steps == 1 and calls[1:] == [3] * 11
    if name == "rolling":
        assert calls[1:] == [1] * 11
    if name in ("ddpm", "ddim", "rtc"):  # rtc without a frozen prefix (no delay) samples like ddim
        assert calls[4] == expected_first and calls[1:4] == [0, 0, 0]  # 4 actions executed per chunk


def test_strategies_share_one_model():
    policy = make_policy()
    weights = [p.data_ptr() for p in policy.parameters()]
    for name in STRATEGIES:
        policy.set_strategy(name, **STRATEGY_KWARGS[name])
        run_episode(policy, steps=3)
        assert [p.data_ptr() for p in policy.parameters()] == weights


def test_rti_with_k_equal_K_and_no_warm_start_is_full_ddpm():
    policy = make_policy()
    obs = np.random.default_rng(1).normal(size=(2, OBS_DIM)).astype(np.float32)
    chunks = {}
    for name, kwargs in (("ddpm", {}), ("rti", {"k": K, "warm_start": False})):
        policy.set_strategy(name, **kwargs)
        policy.generator = torch.Generator().manual_seed(7)
        chunks[name] = policy.predict_chunk(obs, executed_steps=1)
    np.testing.assert_array_equal(chunks["ddpm"], chunks["rti"])


def test_rti_warm_start_is_used_and_reset_clears_it():
    policy = make_policy()
    policy.set_strategy("rti", k=2)
    obs = np.random.default_rng(2).normal(size=(2, OBS_DIM)).astype(np.float32)
    policy.generator = torch.Generator().manual_seed(0)
    policy.predict_chunk(obs)
    assert policy.calls_last_prediction == K
    policy.predict_chunk(obs)
    assert policy.calls_last_prediction == 2  # warm-started
    policy.reset()
    policy.predict_chunk(obs)
    assert policy.calls_last_prediction == K  # nothing leaked from the previous episode


def test_rti_renoise_forward_diffuses_the_guess_and_costs_k_calls():
    policy = make_policy()
    obs = np.random.default_rng(2).normal(size=(2, OBS_DIM)).astype(np.float32)
    chunks = {}
    for renoise in (False, True):
        policy.set_strategy("rti", k=3, renoise=renoise)
        policy.generator = torch.Generator().manual_seed(0)
        policy.predict_chunk(obs)
        chunks[renoise] = policy.predict_chunk(obs)
        assert policy.calls_last_prediction == 3  # re-noising is free: no network call
    assert not np.allclose(chunks[False], chunks[True])  # the guess really was diffused before denoising


def test_rti_cold_start_can_be_a_short_ddim_run():
    policy = make_policy()
    policy.set_strategy("rti", k=2, cold_start_steps=4)
    obs = np.random.default_rng(2).normal(size=(2, OBS_DIM)).astype(np.float32)
    policy.predict_chunk(obs)
    assert policy.calls_last_prediction == 4
    policy.predict_chunk(obs)
    assert policy.calls_last_prediction == 2
    with pytest.raises(ValueError, match="cold_start_steps"):
        make_strategy("rti", cold_start_steps=0)
    for eta in (-0.1, 1.5):
        with pytest.raises(ValueError, match="rti eta must be between 0"):
            make_strategy("rti", eta=eta)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_rti_eta_zero_refines_the_warm_start_deterministically(eta):
    policy = make_policy()
    policy.set_strategy("rti", k=6, calls=3, cold_start_steps=3, eta=eta)
    obs = np.random.default_rng(3).normal(size=(2, OBS_DIM)).astype(np.float32)
    second_chunks = []
    for seed in (1, 2):  # the same cold start, then warm-started calls under different noise
        policy.reset()
        torch.manual_seed(0)
        policy.predict_chunk(obs)
        torch.manual_seed(seed)
        second_chunks.append(policy.predict_chunk(obs))
    assert np.array_equal(*second_chunks) == (eta == 0.0)


def test_rti_calls_stride_over_the_training_grid():
    policy = make_policy()
    policy.set_strategy("rti", k=9, calls=2, cold_start_steps=4)
    assert policy.strategy.plan(8, K, renoise=False).levels[:, 0].tolist() == [9 / K, 4 / K, 0.0]  # 4.5 -> 4
    obs = np.random.default_rng(2).normal(size=(2, OBS_DIM)).astype(np.float32)
    policy.predict_chunk(obs)
    policy.predict_chunk(obs)
    assert policy.calls_last_prediction == 2
    for calls in (0, 10):
        with pytest.raises(ValueError, match="calls must be between 1 and k=9"):
            make_strategy("rti", k=9, calls=calls)


def test_rti_clip_rule_shrinks_the_guess():
    policy = make_policy(discrete_rule="clip")
    guess = torch.tensor([[[0.3, -0.2, 0.9], [0.1, 0.0, -0.4]]])
    shrunk = policy.codec.prepare_guess(guess)
    torch.testing.assert_close(shrunk[..., 2], torch.tensor([[0.1, -0.1]]))
    torch.testing.assert_close(shrunk[..., :2], guess[..., :2])
    scale_policy = make_policy(discrete_rule="scale")
    raw = torch.tensor([[[0.5, 0.5, 1.0]]])
    assert scale_policy.codec.to_model(raw)[0, 0, 2].item() == pytest.approx(0.1)


@pytest.mark.parametrize("per_step", [False, True], ids=["shared-cond", "per-step-cond"])
def test_save_load_round_trip_gives_identical_actions(tmp_path, per_step):
    policy = make_policy(per_step=per_step)
    policy.save_pretrained(tmp_path, extra={"trained_with": "pytest"})
    loaded = DiffusionPolicy.from_pretrained(tmp_path, strategy="ddim", steps=5)
    policy.set_strategy("ddim", steps=5)
    obs = np.random.default_rng(3).normal(size=(2, OBS_DIM)).astype(np.float32)
    for p in (policy, loaded):
        p.generator = torch.Generator().manual_seed(11)
    np.testing.assert_array_equal(policy.predict_chunk(obs), loaded.predict_chunk(obs))
    assert loaded.metadata["trained_with"] == "pytest"
    with pytest.raises(FileNotFoundError, match="no shipped policy"):
        DiffusionPolicy.from_pretrained(tmp_path / "missing")


def test_bad_observations_raise_clear_errors():
    policy = make_policy()
    with pytest.raises(ValueError, match="observation must have shape"):
        policy.select_action(np.zeros(OBS_DIM + 1, np.float32))
    with pytest.raises(ValueError, match="observation history must have shape"):
        policy.predict_chunk(np.zeros((3, OBS_DIM), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_chunk(np.full((2, OBS_DIM), np.nan, np.float32))
    with pytest.raises(ValueError, match="unknown strategy"):
        policy.set_strategy("dpm-solver")
    with pytest.raises(ValueError, match="discrete_dims"):
        DiffusionPolicyConfig(obs_shape=(3,), action_dim=2, discrete_dims=(2,))


def test_pixel_policy_predicts():
    policy = make_policy(obs_type="pixels")
    policy.set_strategy("ddim", steps=3)
    chunk = policy.predict_chunk(np.random.default_rng(4).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8))
    assert chunk.shape == (HORIZON, ACTION_DIM)


def test_short_training_run_lowers_the_loss():
    """A real fit of a multimodal toy task: the action chunk is a ramp whose sign the observation gives."""
    torch.manual_seed(0)
    policy = make_policy()
    rng = np.random.default_rng(5)
    obs = rng.normal(size=(512, 2, OBS_DIM)).astype(np.float32)
    direction = np.sign(obs[:, -1, :1])[:, None, :]  # [512, 1, 1]
    ramp = np.linspace(-0.8, 0.8, HORIZON)[None, :, None] * direction
    actions = np.concatenate([ramp, -ramp, np.sign(ramp + 1e-3)], -1).astype(np.float32)
    data = {"obs": torch.from_numpy(obs), "action": torch.from_numpy(actions)}
    trainer = Trainer(
        policy.train(), data,
        TrainerConfig(steps=250, batch_size=64, learning_rate=2e-3, warmup_steps=20, log_every=25, progress=False),
    )  # fmt: skip
    history = trainer.fit()
    assert history[-1]["loss"] < 0.4 * history[0]["loss"]
    # At a low noise level the trained denoiser recovers the chunk the observation asks for.
    model = trainer.ema_model
    with torch.no_grad():
        clean = model.codec.to_model(data["action"][:32])
        level = torch.full((32, HORIZON), 0.1)
        noisy = model.schedule.add_noise(clean, torch.randn_like(clean), level)
        pred = model.denoiser(noisy, level, model._encode(data["obs"][:32]))
        x0, _ = model.schedule.split(pred, noisy, level, "epsilon")
    assert (x0 - clean).abs().mean() < 0.5 * (noisy - clean).abs().mean()


def test_make_strategy_validates():
    with pytest.raises(ValueError, match=r"rti k must lie in \[1, inf\], got 0"):
        make_strategy("rti", k=0)
    with pytest.raises(ValueError, match="exceeds"):
        policy = make_policy()
        policy.set_strategy("rti", k=K + 1, warm_start=False)
        policy.predict_chunk(np.zeros((2, OBS_DIM), np.float32))


def test_init_from_accepts_a_new_prediction_target_but_not_new_sizes():
    from dataclasses import replace

    from worldsim.policies.train import check_init_from

    parent = make_policy().config
    check_init_from(parent, replace(parent, parameterization="epsilon"), "parent")
    with pytest.raises(ValueError, match=r"width \(32 there, 64 here\)"):
        check_init_from(parent, replace(parent, width=64), "parent")
    # Training-only settings and the observation check's bounds (absent from older checkpoints) may change,
    # an unset obs_feature_dim is the width; bounds that both sides have must agree.
    bounded = replace(parent, obs_low=(-1.0,) * OBS_DIM, obs_high=(1.0,) * OBS_DIM)
    check_init_from(parent, replace(bounded, prefix_conditioning=4, obs_feature_dim=None, width=32), "parent")
    with pytest.raises(ValueError, match=r"obs_high"):
        check_init_from(bounded, replace(bounded, obs_high=(2.0,) * OBS_DIM), "parent")


def test_clip_sample_is_refused_where_it_would_cut_standardized_actions():
    """clip_sample bounds min-max's [-1, 1]; under meanstd the same bound is one standard deviation, which
    silently flattened a standardized pendulum policy's actions to a constant."""
    with pytest.raises(ValueError, match="normalization=meanstd it would cut them at 1.0 standard deviations"):
        DiffusionPolicyConfig(normalization="meanstd", clip_sample=1.0)
    assert DiffusionPolicyConfig().clip_sample is None  # the default recipe standardizes and does not clamp
    assert DiffusionPolicyConfig(normalization="minmax", clip_sample=1.0).clip_sample == 1.0


def test_per_step_conditioning_gives_each_chunk_position_its_own_vector():
    shared, per_step = make_policy(), make_policy(per_step=True)
    obs = torch.from_numpy(np.random.default_rng(6).normal(size=(3, 2, OBS_DIM)).astype(np.float32))
    assert tuple(shared._encode(obs).shape) == (3, 32)
    cond = per_step._encode(obs)
    assert tuple(cond.shape) == (3, HORIZON, 32)
    assert (cond[:, 0] - cond[:, 1]).abs().min() > 0  # positions differ, not one vector repeated
    with pytest.raises(ValueError, match="policy.per_step_conditioning must be true or false, got 'no'"):
        DiffusionPolicyConfig(obs_shape=(OBS_DIM,), action_dim=ACTION_DIM, per_step_conditioning="no")
    # worldsim's shipped checkpoints predate the option: their configs load with it off.
    assert DiffusionPolicy.from_pretrained("pusht-state").step_conditioning is None


def _fit_chunk_shape(per_step: bool) -> float:
    """Trains the denoiser as a regressor (every token at the top level, so it sees no action) for 300 steps
    on data shaped like a balancing controller's: 95% of the windows barely move, the rest start a large
    correction that decays along the chunk. Returns the fraction of the actions' variance it explains."""
    torch.manual_seed(0)
    policy = make_policy(discrete_dims=(), per_step=per_step).train()
    rng = np.random.default_rng(7)
    scale = np.where(rng.random((2048, 1, 1)) < 0.05, 20.0, 0.05)
    obs = torch.from_numpy((rng.normal(size=(2048, 2, OBS_DIM)) * scale).astype(np.float32))
    decay = torch.exp(-torch.arange(HORIZON) / 2.0)
    actions = (obs[:, -1, :1] * decay)[..., None].expand(-1, -1, ACTION_DIM)
    target = policy.codec.to_model(actions.contiguous())
    optimizer = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    for step in range(300):
        rows = torch.arange(step * 64, (step + 1) * 64) % 2048
        pred = policy.denoiser(torch.randn(64, HORIZON, ACTION_DIM), torch.ones(64, HORIZON), policy._encode(obs[rows]))
        loss = (pred - target[rows]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = policy.denoiser(torch.randn(2048, HORIZON, ACTION_DIM), torch.ones(2048, HORIZON), policy._encode(obs))
    return float(1 - (pred - target).pow(2).mean() / target.var())


def test_per_step_conditioning_learns_an_observation_dependent_chunk_shape_sooner():
    """Why the option exists: with one shared vector the chunk's shape must come from its tokens' positions
    interacting with it, which a short training on rare large corrections does not reach (measured on
    InvertedDoublePendulum's demonstrations, docs/bring_your_own_env.md)."""
    shared, per_step = _fit_chunk_shape(False), _fit_chunk_shape(True)
    assert per_step > 0.9 and shared < per_step - 0.2, (shared, per_step)
