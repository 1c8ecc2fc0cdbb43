"""The TRPO update of the tutorials, step by step, on CartPole.

The seed tutorials derive TRPO in four moves: maximize the surrogate advantage
L(theta) = mean(ratio * A) under mean KL(old || new) <= delta; expand L to first order and
the KL to second order (its Hessian is the Fisher matrix F); solve F x = g by conjugate
gradient on Fisher-vector products; take the step sqrt(2 delta / x^T F x) x and backtrack
until the true surrogate improves and the true KL is within delta.

This script writes that update out with the public pieces of ``rl_adapters`` (policy,
rollout collector, GAE, critic) and ``trustregion`` (``natural_gradient_step``,
``backtracking_line_search``) -- the same calls ``rl_adapters.TRPO.train_one_update``
makes -- and plots, for the last update, the surrogate improvement and the KL of every
line-search trial.

Run:  python examples/trpo_cartpole_step.py [--short] [--out DIR]
(``--short`` or ``TR_EXAMPLES_SHORT=1``: 3 small updates instead of 40.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import trustregion as tr
from rl_adapters.config import TRPOConfig
from rl_adapters.normalization import RunningMeanStd
from rl_adapters.policies import FisherOperator, make_policy
from rl_adapters.rollout import Collector, advantages_and_returns, make_env_groups
from rl_adapters.value import ValueFunction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("TR_EXAMPLES_SHORT") == "1")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the figure")
    args = parser.parse_args()
    n_updates, n_steps = (3, 128) if args.short else (40, 1024)

    cfg = TRPOConfig.for_env("CartPole-v1")
    delta = cfg.max_kl
    rng = np.random.default_rng(0)

    # The pieces an agent is made of.
    groups = make_env_groups("CartPole-v1", n_envs=2, kind="sync", seed=0)
    venv = groups[0].venv
    policy = make_policy(venv.single_observation_space, venv.single_action_space,
                         hidden=cfg.policy_hidden, activation=cfg.activation)
    theta = policy.init_params(rng)
    critic = ValueFunction(4, cfg.value_hidden, cfg.activation)
    critic.init(rng)
    obs_rms = RunningMeanStd((4,))
    collector = Collector(groups, policy, obs_rms, None, cfg.clip_obs)
    collector.reset()

    print(f"CartPole-v1, delta = max_kl = {delta}, batch = 2 x {n_steps} steps")
    print(" update  return  CG its  predicted  actual    KL        trials  accepted")
    for update in range(1, n_updates + 1):
        # Collect a batch with the current policy, then GAE advantages and lambda-returns.
        batch = collector.collect(theta, n_steps)
        adv_tn, returns_tn, _ = advantages_and_returns(batch, critic, cfg.gamma, cfg.gae_lambda)
        n = adv_tn.size
        obs = batch.obs.reshape(n, -1)
        actions = batch.actions.reshape(n, -1)
        returns = returns_tn.reshape(n)
        adv = adv_tn.reshape(n)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        # Surrogate L(theta') = mean(pi_theta'(a|s) / pi_theta(a|s) * A): first-order
        # expansion at theta gives its gradient g = mean(A grad log pi).
        out_old, cache = policy.outputs(theta, obs, keep_cache=True)
        logp_old = policy.log_prob(theta, out_old, actions)
        g = policy.surrogate_gradient(theta, cache, out_old, actions, adv)

        # Second-order expansion of the KL: its Hessian is the Fisher matrix F, used only
        # through products F v (Jacobian-vector, metric, vector-Jacobian: no matrix).
        fisher = FisherOperator(policy, theta, cache, out_old, np.dtype(np.float64))

        # CG on F x = g, then the step sqrt(2 delta / x^T F x) x.
        nat = tr.natural_gradient_step(g, fisher, delta, cg_iters=cfg.cg_iters,
                                       damping=cfg.cg_damping)

        def surrogate_and_kl(theta_new, obs=obs, actions=actions, adv=adv,
                             out_old=out_old, logp_old=logp_old, theta_old=theta):
            out, _ = policy.outputs(theta_new, obs)
            ratio = np.exp(policy.log_prob(theta_new, out, actions) - logp_old)
            kl = np.mean(policy.kl(theta_old, out_old, theta_new, out))
            return float(np.mean(ratio * adv)), float(kl)

        # Backtracking line search on the true surrogate and the true KL.
        f0 = float(np.mean(adv))
        ls = tr.backtracking_line_search(
            surrogate_and_kl, theta, nat.step, expected_improvement=nat.expected_improvement,
            max_constraint=delta, shrink=cfg.ls_shrink, max_backtracks=cfg.ls_max_backtracks,
            f0=f0,
        )
        theta_before, theta = theta, ls.x  # ls.x is theta itself if no trial was accepted

        # Value fit: regress the critic on the lambda-returns.
        critic.fit(obs, returns, rng, optimizer=cfg.value_optimizer, lr=cfg.value_lr,
                   epochs=cfg.value_epochs, batch_size=cfg.value_batch_size,
                   lbfgs_iters=cfg.value_lbfgs_iters, l2=cfg.value_l2)

        mean_return = np.mean(batch.episode_returns) if batch.episode_returns else np.nan
        print(f"{update:7d}  {mean_return:6.1f}  {nat.cg.nit:6d}  "
              f"{nat.expected_improvement:9.4f}  {ls.objective - f0:8.4f}  "
              f"{ls.constraint:.2e}  {len(ls.fractions):6d}  {ls.accepted}")
    for group in groups:
        group.close()

    # The last update's line search, and the whole backtracking path for comparison.
    fractions = cfg.ls_shrink ** np.arange(cfg.ls_max_backtracks + 1)
    path = np.array([surrogate_and_kl(theta_before + t * nat.step) for t in fractions])
    fig, (ax_l, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_l.plot(fractions, path[:, 0] - f0, "o-", color="0.7", label="surrogate along the step")
    ax_l.plot(fractions, fractions * nat.expected_improvement, "--", color="C2",
              label=r"first-order prediction $t\,g^T s$")
    ax_l.plot(ls.fractions, ls.objectives - f0, "s", color="C0", ms=8,
              label="line-search trials")
    ax_kl.plot(fractions, path[:, 1], "o-", color="0.7", label="KL along the step")
    ax_kl.plot(fractions, fractions**2 * delta, "--", color="C2",
               label=r"quadratic model $\frac{1}{2}t^2 s^T F s$")
    ax_kl.plot(ls.fractions, ls.constraints, "s", color="C0", ms=8, label="line-search trials")
    ax_kl.axhline(delta, color="C3", lw=1, label=r"$\delta$")
    if ls.accepted:
        for ax, y in ((ax_l, ls.objective - f0), (ax_kl, ls.constraint)):
            ax.plot([ls.step_fraction], [y], "*", color="C1", ms=16, label="accepted")
    ax_l.set(xlabel="step fraction t", ylabel=r"$L(\theta + t s) - L(\theta)$",
             title=f"surrogate improvement (update {n_updates})")
    ax_kl.set(xlabel="step fraction t", ylabel=r"mean KL$(\pi_\theta \| \pi_{\theta+ts})$",
              title="KL per trial")
    for ax in (ax_l, ax_kl):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "trpo_cartpole_step.png", dpi=110)
    print(f"figure: {args.out / 'trpo_cartpole_step.png'}")


if __name__ == "__main__":
    main()
