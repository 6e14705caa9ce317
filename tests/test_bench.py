"""bench/gpu.py runs end to end (tiny random model on the CPU) and reports every column
of the paper's efficiency table."""

import importlib.util
import json
from pathlib import Path

import pytest


def _load_bench(name="gpu"):
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_smoke_on_cpu(capsys):
    bench = _load_bench()
    bench.main(["--tiny", "--device", "cpu", "--seconds", "1", "--eager-seconds", "1", "--policies", "window,dynamic",
                "--backend", "aot_eager", "--sections", "eager"])
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == "random (tiny)" and out["gpu"] == "cpu"
    assert set(out["policies"]) == {"window", "dynamic"} and out["skipped"] == [] and "errors" not in out
    for row in out["policies"].values():
        assert row["frames"] == 13 and row["kv_gb"] > 0 and row["first_frame_s"] > 0
        assert row["fps_with_decode"] > 0 and row["new_compiled_graphs"] == 0  # compiled while warming up
    assert out["compile"]["compiled_graphs"] > 0 and out["compile"]["compile_and_warmup_s"] > 0
    assert out["compile"]["frames"]["ok"] == out["compile"]["frames"]["total"]  # no frame fell back to eager
    assert out["policies"]["dynamic"]["psnr_vs_eager_db"][0] > 60  # the same frames, up to float rounding
    assert out["dynamic_vs_window_fps"] > 0 and out["fast_vs_eager_fps_same_blocks"]["blocks"] == 1
    assert out["sdpa"]["default"] == "flash_for_cpu"
    assert out["paper_a100"]["dynamic"] == {"fps": 15, "kv_gb": 4.2, "peak_gb": 27}
    assert out["peers"]["Hybrid Forcing"] == {"gpu": "H100", "fps": 29.5}


def test_gpu_bench_rejects_unknown_policy():
    bench = _load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--device", "cpu", "--policies", "window,lru"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--device", "cpu", "--sections", "eager,everything"])


def test_speckle_finds_the_part_of_a_latent_no_output_can_write():
    import torch
    from einops import rearrange

    from bench.speckle import outside_part
    from packforcing.embedded import camera_model

    backbone = camera_model.build(0)
    weight = backbone.transformer.proj_out.weight.detach()  # (4 * 4 * 16 values a patch, 128)
    gen = torch.Generator().manual_seed(0)
    # diffusers' own unpatchify places what the output layer writes: any such latent is inside
    written = torch.randn(1, 4 * 4 * 4, 128, generator=gen) @ weight.T
    handle = backbone.transformer.proj_out.register_forward_hook(lambda module, args, out: written)
    backbone.move_camera(0, None, "a red circle")  # where the block looks, as the sampler sets it
    backbone.on_frame(0.0)
    try:
        with torch.no_grad():
            latent = backbone.transformer(torch.zeros(1, 16, 4, 16, 16), timestep=torch.tensor([500.0]),
                                          encoder_hidden_states=torch.zeros(1, 4, 64), return_dict=False)[0]
    finally:
        handle.remove()
    part, share = outside_part(backbone, latent)
    assert share < 1e-8 and part.abs().max() < 1e-4
    # a random latent: the least-squares residual against the layer's columns, patch by patch
    latent = torch.randn(1, 16, 2, 16, 16, generator=gen)
    tokens = rearrange(latent, "1 c f (h ph) (w pw) -> (ph pw c) (f h w)", ph=4, pw=4)
    residual = tokens - weight @ torch.linalg.lstsq(weight, tokens).solution
    part, share = outside_part(backbone, latent)
    assert share == pytest.approx(float(residual.square().sum() / tokens.square().sum()), rel=1e-4)
    assert 0.4 < share < 0.6  # 128 of 256 directions
    torch.testing.assert_close(rearrange(part, "1 c f (h ph) (w pw) -> (ph pw c) (f h w)", ph=4, pw=4), residual,
                               atol=1e-4, rtol=1e-4)


def test_attention_mass_names_each_attended_block_and_its_shares_sum_to_one():
    import torch

    from bench.attention_mass import PARTS, attention_mass, part_of
    from bench.camera_recall import clips_for
    from packforcing.embedded import camera_model

    row = {"sink": [], "recent": [], "mid": [4]}  # block 7 films the place block 4 filmed
    assert [part_of(i, 7, row, 2) for i in (0, 1, 2, 4, 5, 6)] == ["sink", "sink", "other_mid", "source",
                                                                   "other_mid", "recent"]
    torch.manual_seed(0)
    backbone = camera_model.build(0)
    clips = clips_for(1234, 1, backbone.codec)
    dynamic = attention_mass(backbone, clips)
    assert sorted(dynamic) == [0, 1, 2, 3]
    for shares in dynamic.values():
        assert set(shares) == set(PARTS) and sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
        assert shares["source"] > 0 and shares["sink"] > 0 and shares["self"] > 0
    window = attention_mass(backbone, clips, policy="window")  # negative control: no mid bank attended
    assert all(s["source"] == 0 and s["other_mid"] == 0 for s in window.values())
    assert all(sum(s.values()) == pytest.approx(1.0, abs=1e-3) for s in window.values())


def test_pan_where_tells_where_the_motion_stops():
    """The true world pans everywhere; freezing the blocks after the first loop (where every
    mid-bank revisit lies) stops the revisits' pan and leaves blocks 0-7 as they were."""
    from bench.camera import FPB, camera_xs, pan_where
    from packforcing.embedded import panorama as world

    spec = world.spec_from_prompt("a red circle and a blue square", 1000)
    xs = camera_xs(f"{spec.pan}:30", 30)
    truth = world.render(spec, xs)
    whole = pan_where(truth, xs)
    assert whole["pan_first_blocks"] > 0.95 and whole["pan_mid_revisits"] > 0.95 and whole["pan_accuracy"] > 0.95
    def freeze(blocks):  # each block's frames all show its first frame
        still = truth.copy()
        for b in blocks:
            still[b * FPB : (b + 1) * FPB] = truth[b * FPB]
        return still

    frozen = pan_where(freeze(range(8, 30)), xs)
    edge = 2 / (8 * FPB)  # the lag-2 pairs that straddle the frozen edge may change
    assert abs(frozen["pan_first_blocks"] - whole["pan_first_blocks"]) <= edge and frozen["pan_mid_revisits"] < 0.2
    swapped = pan_where(freeze(range(8)), xs)  # control: freezing blocks 0-7 instead
    assert swapped["pan_first_blocks"] < 0.2 and swapped["pan_mid_revisits"] == pytest.approx(whole["pan_mid_revisits"])
