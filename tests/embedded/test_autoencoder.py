"""The learned world autoencoder (packforcing/embedded/autoencoder.py) and its shipped weights."""

import math
import random

import pytest
import torch

from packforcing.embedded.autoencoder import AutoencoderCodec, WorldAutoencoder, load_codec
from packforcing.embedded.train_autoencoder import world_groups

# the shipped weights score 22.7 dB on the clips below (the DCT codec 27.2); untrained
# weights 7.6, each clip decoded from another clip's latent 12.4
PSNR_FLOOR_DB = 20.0
CONTROL_CEILING_DB = 15.0
HELD_OUT = 777_777_777  # training draws its data from seeds 0..steps, its stats from -1


@pytest.fixture(scope="module")
def codec():
    return load_codec()


@pytest.fixture(scope="module")
def clips():
    return world_groups(random.Random(HELD_OUT), 6, per_world=2, frames=16)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4.0 / (a - b).pow(2).mean().item())  # pixels span [-1, 1]


def test_shapes_and_interface(codec):
    assert (codec.latent_channels, codec.temporal_factor, codec.spatial_factor) == (16, 4, 8)
    assert codec.first_frame_alone is False
    pixels = torch.rand(2, 3, 14, 64, 64) * 2 - 1  # 14 frames: padded to 16 as WorldCodec does
    z = codec.encode(pixels)
    assert z.shape == (2, 16, 4, 8, 8)
    out = codec.decode(z)
    assert out.shape == (2, 3, 16, 64, 64) and out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(torch.zeros(1, 3, 4, 60, 64))
    with pytest.raises(ValueError, match="latent must be"):
        codec.decode(torch.zeros(1, 12, 1, 8, 8))


def test_streaming_decode_equals_full_decode(codec, clips):
    z = codec.encode(clips[:2])
    stream = codec.stream_decoder()
    parts = torch.cat([stream.decode_next(z[:, :, i : i + 1]) for i in range(z.shape[2])], dim=2)
    assert torch.allclose(parts, codec.decode(z), atol=1e-5)


def test_shipped_weights_reconstruct_held_out_clips(codec, clips):
    score = psnr(codec.decode(codec.encode(clips)), clips)
    assert score > PSNR_FLOOR_DB, f"held-out PSNR {score:.2f} dB under the floor {PSNR_FLOOR_DB}"


def test_negative_controls_score_far_lower(codec, clips):
    torch.manual_seed(0)
    untrained = AutoencoderCodec(WorldAutoencoder(codec.model.widths), codec.mean.flatten(), codec.std.flatten())
    assert psnr(untrained.decode(untrained.encode(clips)), clips) < CONTROL_CEILING_DB
    z = codec.encode(clips)
    other = codec.decode(z.roll(1, dims=0))  # each clip decoded from another clip's latent
    assert psnr(other, clips) < CONTROL_CEILING_DB


def test_latent_is_about_zero_mean_unit_std(codec, clips):
    z = codec.encode(clips).transpose(0, 1).reshape(16, -1)
    assert z.mean(1).abs().max() < 0.35, z.mean(1)
    assert ((z.std(1) > 0.6) & (z.std(1) < 1.6)).all(), z.std(1)


def test_camera_model_builds_saves_and_loads_the_autoencoder_choice(tmp_path):
    from packforcing.embedded import camera_model

    backbone = camera_model.build(0, codec="ae")
    assert isinstance(backbone.codec, AutoencoderCodec) and backbone.patch == (1, 2, 2)
    assert backbone.tokens_per_latent_frame() * 4 == 64 and backbone.compressed_grid(4) == (2, 1, 1)
    camera_model.save(backbone, str(tmp_path))
    assert camera_model.load(str(tmp_path)).codec_name == "ae"
    with pytest.raises(ValueError, match="codec='vq' not allowed"):
        camera_model.build(0, codec="vq")
