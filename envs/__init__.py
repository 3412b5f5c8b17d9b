"""Gymnasium environments of the thesis experiments; every id is registered here on ``import envs``.

2-D envs (numpy; ``gymnasium.make_vec(id, n)`` returns a batched VectorEnv stepping all n in one call):

====================================  ==========================================================
``ImageNav-v0``                       crop window over an image, 5 moves (GTM-SM §7.4.1)
``ImageNavObstacles-v0``              same with 8 random impassable grey cells per episode (§7.10.1)
``ImageNavGoal-v0``                   same with a goal cell; its crop in ``info["goal_obs"]``
``BouncingBall-v0``                   KVAE ball in a box, 32x32 binary frames (§6.5.1); ``variant=``
``BouncingBallGravity-v0``            ball under gravity (§6.5.3)
``BouncingBallPolygon-v0``            ball inside an irregular polygon (§6.5.3)
``BouncingBallPong-v0``               ball between two paddles that follow it (§6.5.3)
``BouncingBallForce-v0``              box ball pushed by a bounded continuous force (for planning)
``PixelPendulum-v0``                  ``Pendulum-v1`` as 16x16 frames, continuous torque (§6.5.2)
====================================  ==========================================================

3-D envs (need the ``miniworld`` extra; rendered headless): ``WM-MiniWorld-<Name>-v0`` for each name in
:data:`envs.miniworld_nav.MINIWORLD_NAMES` (Maze, MazeS2, MazeS3, FourRooms, OneRoom, TMaze, ...), and
``WM-MiniWorld-Rotate-v0`` (RoomObjects, turn actions only: the rotating agent of §7.4.2.1).

Example:
    >>> import gymnasium as gym, envs
    >>> env = gym.make("ImageNav-v0")
    >>> venv = gym.make_vec("BouncingBall-v0", num_envs=8)   # one numpy call per step
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from envs.miniworld_nav import MINIWORLD_NAMES

__all__ = ["ENV_IDS", "MINIWORLD_IDS"]

ENV_IDS: list[str] = []
MINIWORLD_IDS: list[str] = []


def _register(env_id: str, module: str, cls: str, limit: int | None, vector: bool = True, **kwargs: object) -> None:
    if env_id in registry:  # re-import (e.g. importlib.reload) keeps the first registration
        ENV_IDS.append(env_id)
        return
    register(
        id=env_id,
        entry_point=f"envs.{module}:{cls}Env",
        vector_entry_point=f"envs.{module}:{cls}VectorEnv" if vector else None,
        max_episode_steps=limit,
        kwargs=kwargs,
    )
    ENV_IDS.append(env_id)


_register("ImageNav-v0", "image_nav", "ImageNav", 512)
_register("ImageNavObstacles-v0", "image_nav", "ImageNav", 512, n_obstacles=8)
_register("ImageNavGoal-v0", "image_nav", "ImageNav", 100, goal=True)
_register("BouncingBall-v0", "bouncing_ball", "BouncingBall", 20)
_register("BouncingBallGravity-v0", "bouncing_ball", "BouncingBall", 20, variant="gravity")
_register("BouncingBallPolygon-v0", "bouncing_ball", "BouncingBall", 20, variant="polygon")
_register("BouncingBallPong-v0", "bouncing_ball", "BouncingBall", 20, variant="pong")
_register("BouncingBallForce-v0", "bouncing_ball", "BouncingBall", 20, action_mode="force")
_register("PixelPendulum-v0", "pixel_pendulum", "PixelPendulum", 200)

for _name in MINIWORLD_NAMES:
    _register(f"WM-MiniWorld-{_name}-v0", "miniworld_nav", "MiniWorldNav", None, vector=False, env_name=_name)
    MINIWORLD_IDS.append(f"WM-MiniWorld-{_name}-v0")
_register("WM-MiniWorld-Rotate-v0", "miniworld_nav", "MiniWorldNav", None, vector=False,
          env_name="RoomObjects", actions="rotate", max_episode_steps=80)
MINIWORLD_IDS.append("WM-MiniWorld-Rotate-v0")
