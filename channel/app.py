"""The channel as ``hoplink channel`` and ``python -m channel`` start it: one process carrying
the links (:mod:`channel.server`), or with ``--workers N`` (N > 1) the control plane of N such
processes behind one link port (:mod:`channel.workers`)."""

from __future__ import annotations

from channel import server, workers
from shared.config import LinkConfig
from shared.service import ChannelSettings, serve


def build_app(config: LinkConfig, settings: ChannelSettings):
    if settings.control_plane:
        return workers.control_plane_app(config, settings)
    return server.build_app(config, settings)


def run(config: LinkConfig, settings: ChannelSettings) -> int:
    return serve(build_app(config, settings), settings)


__all__ = ["build_app", "run"]
