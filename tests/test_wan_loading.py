"""`load_wan` end to end on a tiny synthetic copy of the real layout: a
Wan2.1-T2V-1.3B-Diffusers directory (vae/, tokenizer/, text_encoder/) and a Self-Forcing
checkpoint in the original format. Same code path as the real model, at 832x480."""

import pytest
import torch
from helpers import original_key_shapes

from packforcing.backbones import wan, wan_checkpoint
from packforcing.backbones.tiny import TINY_TRANSFORMER, TINY_VAE
from packforcing.events import Block, Frames
from packforcing.pipeline import PackForcingPipeline

WORDS = ["a", "red", "fox", "in", "the", "snow", "at", "dawn"]


@pytest.fixture(scope="module")
def local_wan(tmp_path_factory):
    from diffusers import AutoencoderKLWan
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    root = tmp_path_factory.mktemp("wan")
    torch.manual_seed(0)
    AutoencoderKLWan(**TINY_VAE).save_pretrained(root / "base" / "vae")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root / "base" / "tokenizer")
    config = UMT5Config(vocab_size=len(vocab), d_model=TINY_TRANSFORMER["text_dim"], d_kv=8, d_ff=32, num_layers=1,
                        num_heads=2, relative_attention_num_buckets=8)
    UMT5EncoderModel(config).save_pretrained(root / "base" / "text_encoder")
    gen = torch.Generator().manual_seed(1)
    state = {k: 0.05 * torch.randn(s, generator=gen) for k, s in original_key_shapes(TINY_TRANSFORMER).items()}
    (root / "sf" / "checkpoints").mkdir(parents=True)
    torch.save({"generator_ema": state}, root / "sf" / "checkpoints" / "self_forcing_dmd.pt")
    return root


@pytest.fixture(scope="module")
def backbone(local_wan, tmp_path_factory):
    import os

    os.environ["PACKFORCING_CACHE"] = str(tmp_path_factory.mktemp("converted"))
    try:
        return wan.load_wan(str(local_wan / "sf"), str(local_wan / "base"), device="cpu", dtype=torch.float32,
                            transformer_config=TINY_TRANSFORMER)
    finally:
        del os.environ["PACKFORCING_CACHE"]


def test_loads_the_real_layout(backbone):
    assert backbone.name == "wan-1.3b" and (backbone.width, backbone.height, backbone.fps) == (832, 480, 16)
    assert isinstance(backbone.transformer.condition_embedder.timesteps_proj, wan_checkpoint.Float64Timesteps)
    assert not backbone.transformer.training
    assert backbone.hr_compressor is None  # training-free LR compression on the real model


def test_prompt_is_encoded_once_to_512_tokens_with_padding_zeroed(backbone, monkeypatch):
    encoder = backbone.encode_prompt.encoder
    calls = []
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    states = backbone.encode_prompt("a red fox in the snow")
    again = backbone.encode_prompt("a red fox in the snow")
    assert len(calls) == 1 and again is states
    assert states.shape == (1, 512, TINY_TRANSFORMER["text_dim"])
    nonzero_rows = int((states.abs().sum(-1) > 0).sum())
    assert nonzero_rows == 6  # five words + </s>; padding rows are zero
    assert next(encoder.parameters()).device.type == "cpu"  # offloaded after encoding


def test_streams_a_block_at_832x480(backbone):
    pipe = PackForcingPipeline(backbone)
    frames, blocks = [], []
    config = pipe.default_config.replace(policy="dynamic", sink_frames=4)  # one sink block in a 1 s video
    for event in pipe.stream("a red fox at dawn", seconds=1, seed=0, config=config):
        if isinstance(event, Frames):
            frames.append(event.frames)
        elif isinstance(event, Block):
            blocks.append(event)
    # 1 s = 4 latent frames = one block; the causal VAE turns it into 1 + 3 * 4 pixel frames
    assert [f.shape for f in frames] == [(13, 480, 832, 3)]
    assert frames[0].std() > 0
    assert blocks[0].context_tokens == 4 * 1560  # 30 x 52 tokens per latent frame
