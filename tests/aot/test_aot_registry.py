"""moe_cts.kernels.registry lists every kernel, and the capture of fused_moe launches each of them."""

from __future__ import annotations

import pytest

from moe_cts.kernels.registry import KERNELS, Launch, declared_kernels


def test_every_kernel_in_the_kernel_sources_is_registered():
    declared = declared_kernels()
    missing = sorted(set(declared) - set(KERNELS))
    assert not missing, f"add these @triton.jit kernels to moe_cts.kernels.registry.KERNELS: {missing}"


def test_the_registry_names_no_kernel_that_the_sources_lack():
    declared = declared_kernels()
    stale = sorted(set(KERNELS) - set(declared))
    assert not stale, f"moe_cts.kernels.registry.KERNELS lists kernels no _*_kernels.py defines: {stale}"


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_each_registered_kernel_lives_in_the_module_the_registry_names(name):
    assert declared_kernels()[name] == KERNELS[name].module


def test_a_launch_description_round_trips_through_json():
    launch = Launch(
        "down_kernel",
        ({"tensor": "bfloat16", "shape": [4, 8], "stride": [8, 1]}, 3, 1.5),
        {"BLOCK_M": 64},
        (7,),
    )
    assert Launch.from_json(launch.to_json()) == launch


def test_the_default_tier_launches_every_registered_kernel_on_every_target(launched):
    """Capture goes through the real launchers, so a kernel that no scenario reaches is never compiled."""
    from moe_cts.conformance.aot.plan import target_names

    missing = sorted((k, t) for k in KERNELS for t in target_names() if (k, t) not in launched)
    assert not missing, f"no default-tier scenario launches: {missing}"
