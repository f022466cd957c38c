"""The test hosts' network refuses names and subnets it cannot make (no root needed)."""

from __future__ import annotations

import pytest

from orchestrator.dev.netns import IFNAMSIZ, Network


@pytest.mark.parametrize("subnet", ["8.8.8.0/24", "10.213.0.0/16", "10.213.16.0/25"])
def test_only_a_private_slash_24(subnet: str) -> None:
    with pytest.raises(ValueError, match="private /24"):
        Network("orhx", subnet)


@pytest.mark.parametrize("prefix", ["", "toolong", "or-hx", "or hx"])
def test_prefix_fits_interface_names(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Network(prefix, "10.213.16.0/24")


def test_names_and_addresses() -> None:
    net = Network("orhx", "10.213.16.0/24")
    assert (net.bridge, net.gateway) == ("orhx-br", "10.213.16.1")
    with pytest.raises(ValueError, match="host name"):
        net.add("w" * (IFNAMSIZ - len("orhx-") + 1))  # refused before any `ip` runs
