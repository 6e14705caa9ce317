import math

import torch

from packforcing.backbone import WanVAECodec
from packforcing.compression import HRCompressor, fit_lr_to_grid, lr_latent
from packforcing.config import PackForcingConfig
from packforcing.memory import compressed_grid, kv_curve, memory_table


def test_paper_numbers():
    t = memory_table(120)
    assert t["tokens_per_latent_frame"] == 1560
    assert t["tokens_per_block"] == 6240
    assert t["compressed_tokens_per_block"] == 182
    assert t["context_tokens"] == 27872
    assert t["full_cache_tokens"] == 748800
    assert t["full_cache_bytes"] == 138_018_816_000
    assert t["bytes_per_token"] == 184_320
    by = t["kv_bytes_by_policy"]
    assert by["window"] == 18720 * 184320  # 3.45 GB
    assert round(by["fifo"] / 1e9, 1) == 4.0
    assert 4.2 <= by["dynamic"] / 1e9 <= 4.3
    assert by["window"] < by["fifo"] < by["dynamic"] < by["full"]


def test_kv_curve_flat_for_packforcing_linear_for_full():
    rows = kv_curve(120)
    assert len(rows) == 120
    full = [r["full"] for r in rows]
    assert all(b - a == 6240 * 184320 for a, b in zip(full[3:], full[4:]))
    dynamic = [r["dynamic"] for r in rows]
    assert len(set(dynamic[30:])) == 1 and dynamic[-1] == memory_table(120)["packforcing_kv_bytes"]


def test_hr_branch_real_geometry_182_tokens():
    hr = HRCompressor(16, 1536)
    with torch.no_grad():
        out = hr(torch.randn(1, 16, 4, 60, 104))
    assert out.shape == (1, 1536, 2, 7, 13) and math.prod(out.shape[2:]) == 182
    assert compressed_grid(4, 60, 104) == (2, 7, 13)


def test_hr_restart_starts_from_the_lr_tokens_and_can_learn():
    torch.manual_seed(0)
    hr = HRCompressor(16, 64, (8, 16, 32, 32))
    latent = torch.randn(2, 16, 4, 16, 16)
    with torch.no_grad():
        hr.net[-1].weight.fill_(5.0)  # a grown branch, as v7's became
        assert hr(latent).abs().mean() > 1
    hr.restart()
    out = hr(latent)
    assert out.shape == (2, 64, 2, 2, 2) and torch.equal(out, torch.zeros_like(out))  # fused = LR alone
    out.pow(2).add(out).sum().backward()
    assert hr.net[-1].weight.grad.abs().sum() > 0  # the zero layer still learns
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in hr.net[0].parameters())  # nothing flows below it yet


def test_lr_branch_real_geometry_uses_frozen_vae():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    codec = WanVAECodec(vae)
    patch_embedding = torch.nn.Conv3d(16, 1536, kernel_size=(1, 2, 2), stride=(1, 2, 2))
    latent = torch.randn(1, 16, 4, 60, 104)
    # a first chunk's 13 pixel frames at 480x832 (the decode itself: test_wan_loading.py)
    pixels = torch.rand(1, 3, 13, 480, 832, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        small = fit_lr_to_grid(lr_latent(pixels, codec), (2, 7, 13), (1, 2, 2))
        tokens = patch_embedding(small)
        fused = tokens + HRCompressor(16, 1536)(latent)
    assert tokens.shape == fused.shape == (1, 1536, 2, 7, 13)
    # training-free: the LR branch owns no parameters and leaves the VAE untouched
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    lr_latent(pixels, codec)
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert not torch.is_grad_enabled() or lr_latent(pixels, codec).requires_grad is False


def test_config_rejects_bad_values_with_names():
    import pytest

    for kwargs, word in [({"policy": "lru"}, "policy='lru'"), ({"top_k": -1}, "top_k=-1"),
                         ({"sink_frames": 6}, "sink_frames=6"),
                         ({"top_k": 30, "mid_capacity": 24}, "mid_capacity=24"),
                         ({"compression": "zip"}, "compression='zip'"),
                         ({"step_rule": "ddpm"}, "step_rule='ddpm'"),
                         ({"guidance_scale": -1.0}, "guidance_scale=-1.0")]:
        with pytest.raises(ValueError, match=word.replace("(", r"\(")):
            PackForcingConfig(**kwargs)
