"""The fast path on the CPU: compiled blocks give the eager output and stop recompiling
once a block has been compressed; decoding ahead on a worker gives the inline frames in
the inline order; a block's step reads no tensor value on the host but dynamic's scores."""

import tempfile
import threading

import pytest
import torch
from dense_reference import one_thread  # noqa: F401  (fixture)
from torch._dynamo.utils import counters

from bench.host_syncs import host_syncs
from packforcing.backbones.tiny import build_tiny_random
from packforcing.config import PackForcingConfig
from packforcing.events import Block, Frames
from packforcing.fastpath import FastPath, compile_transformer, conv_layout, sdpa_backend_used
from packforcing.pipeline import PackForcingPipeline
from packforcing.sampler import PackForcingSampler

pytestmark = pytest.mark.usefixtures("one_thread")

# sink 2 blocks, recent 1, a bank of 1: block 3 is the first to compress, block 4 the
# first to score a full bank. "hr" compression needs no pixels, so no codec runs.
CONFIG = PackForcingConfig(top_k=1, mid_capacity=1, compression="hr")


def blocks(sampler, count, text, start=0):
    """x0 of each block, through the sampler's block API (no decode)."""
    out = []
    for index in range(start, start + count):
        sampler.begin_block(index)
        x0 = sampler.denoise_block(index, text)
        sampler.memory.admit(sampler.write_block(index, x0, text), x0, None, text)
        out.append(x0)
    return out


@pytest.fixture(scope="module")
def compiled():
    """(backbone, eager x0 of 6 blocks, compiled x0 of the same 6, graphs after block 4, text)."""
    torch._dynamo.reset()
    backbone = build_tiny_random(width=64, height=64)
    text = backbone.encode_prompt("a test prompt")
    with torch.no_grad():
        eager = blocks(PackForcingSampler(backbone, CONFIG, seed=0), 6, text)
        compile_transformer(backbone.transformer, backend="aot_eager")
        sampler = PackForcingSampler(backbone, CONFIG, seed=0)
        fast = blocks(sampler, 5, text)
        graphs = counters["stats"]["unique_graphs"]
        # the steady state (selection from a full bank, a compression): a recompile raises
        with torch._dynamo.config.patch(error_on_recompile=True):
            fast += blocks(sampler, 1, text, start=5)
    return backbone, eager, fast, graphs, text


def test_compiled_blocks_equal_eager_and_another_seed_does_not(compiled):
    backbone, eager, fast, graphs, text = compiled
    assert graphs > 0  # compiled code ran, not eager under another name
    for e, f in zip(eager, fast):
        torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        other = blocks(PackForcingSampler(backbone, CONFIG, seed=1), 1, text)
    assert (other[0] - eager[0]).abs().max() > 0.1  # the tolerance above can tell outputs apart


def test_no_recompile_once_a_block_is_compressed(compiled):
    backbone, _, _, graphs, text = compiled
    assert counters["stats"]["unique_graphs"] == graphs  # block 5 added no graph
    # control: a block of another size is a new shape, and recompiling now raises
    big = torch.randn(1, 16, 4, 16, 16)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(Exception,
                                                                                             match="[Rr]ecompil"):
        sampler = PackForcingSampler(backbone, CONFIG, seed=0)
        sampler.begin_block(0)
        sampler.write_block(0, big, text)


def test_decode_ahead_gives_the_inline_frames_in_the_inline_order():
    pipe = PackForcingPipeline.from_name("embedded")
    threads = []
    make = pipe.backbone.codec.stream_decoder

    def recording_decoder():
        inner = make()

        class Recording:
            def decode_next(self, latent):
                threads.append(threading.current_thread().name)
                return inner.decode_next(latent)

        return Recording()

    # 5 blocks: block 3 compresses block 2 from its pixels, block 4 attends it
    inline = list(pipe.stream("a red circle", 5))
    assert pipe.enable_fast_path(FastPath(decode_ahead=True)) == "flash_for_cpu"  # the API's switch, without compiling
    pipe.backbone.codec.stream_decoder = recording_decoder
    ahead = list(pipe.stream("a red circle", 5))
    assert [type(e).__name__ for e in ahead] == [type(e).__name__ for e in inline]
    assert [e.block for e in ahead if isinstance(e, (Frames, Block))] == [e.block for e in inline
                                                                          if isinstance(e, (Frames, Block))]
    frames = [e.frames for e in inline if isinstance(e, Frames)]
    assert all((a.frames == f).all() for a, f in zip([e for e in ahead if isinstance(e, Frames)], frames))
    assert [e.mid_selected for e in ahead if isinstance(e, Block)][-1] == [2]  # compressed from pixels decoded ahead
    assert threads == ["packforcing-decode_0"] * 5
    other = [e.frames for e in pipe.stream("a red circle", 2, seed=1) if isinstance(e, Frames)]
    assert (other[0] != frames[0]).any()


@pytest.fixture(scope="module")
def eager_backbone():
    return build_tiny_random(width=64, height=64)


@pytest.mark.parametrize("policy, reads", [("fifo", []), ("window", []), ("dynamic", ["tolist"])])
def test_a_block_step_reads_no_tensor_value_but_dynamic_scores(eager_backbone, policy, reads):
    backbone = eager_backbone
    text = backbone.encode_prompt("a test prompt")
    sampler = PackForcingSampler(backbone, CONFIG.replace(policy=policy), seed=0)
    with torch.no_grad():
        blocks(sampler, 4, text)  # the bank holds one block from here on
        with host_syncs() as seen:
            blocks(sampler, 1, text, start=4)
    assert [name for name, _ in seen] == reads
    assert all("selection.py" in where for _, where in seen)
    with host_syncs() as seen:  # control: a read is seen
        torch.ones(2).sum().item()
    assert [name for name, _ in seen] == ["item"]


def test_options_are_checked_and_the_attention_kernel_is_named():
    with pytest.raises(ValueError, match="mode='fast'.*reduce-overhead"):
        FastPath(mode="fast")
    with pytest.raises(ValueError, match="sdpa='fa4'.*cudnn"):
        FastPath(sdpa="fa4")
    q = torch.randn(1, 2, 8, 16)
    assert sdpa_backend_used(q, q, q) == "flash_for_cpu"
    assert sdpa_backend_used(q.double(), q.double(), q.double()) in ("math", "flash_for_cpu")


def test_inductor_compiles_one_layer_to_the_eager_keys(monkeypatch):
    """Inductor's generated code (fused RMSNorm, RoPE, modulation) on a one-layer model."""
    # one compile cache per CPU capability: a header precompiled under AVX2 fails to build
    # kernels under ATEN_CPU_CAPABILITY=default ('at::vec' has not been declared)
    capability = torch.backends.cpu.get_cpu_capability().lower()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", f"{tempfile.gettempdir()}/packforcing-inductor-{capability}")
    torch._dynamo.reset()
    backbone = build_tiny_random(width=64, height=64, transformer_kwargs=dict(num_layers=1))
    text = backbone.encode_prompt("a test prompt")
    latent = torch.randn(1, 16, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    config = CONFIG.replace(policy="window")

    def keys(x):
        sampler = PackForcingSampler(backbone, config, seed=0)
        sampler.begin_block(0)
        return sampler.write_block(0, x, text).keys[0]

    with torch.no_grad():
        eager = keys(latent)
        compile_transformer(backbone.transformer, backend="inductor")
        fast = keys(latent)
        other = keys(latent + 0.1)
    assert counters["stats"]["unique_graphs"] > 0
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-5)
    assert (other - eager).abs().max() > 1e-2


def test_channels_last_decode_gives_the_contiguous_pixels():
    backbone = build_tiny_random(width=64, height=64)
    latent = torch.randn(1, 16, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def decode(x):
        with torch.no_grad():
            return backbone.codec.stream_decoder().decode_next(x)

    plain = decode(latent)
    conv_layout(backbone.codec.vae, channels_last=True)
    assert any(p.dim() == 5 and p.is_contiguous(memory_format=torch.channels_last_3d)
               for p in backbone.codec.vae.parameters())
    torch.testing.assert_close(decode(latent), plain, rtol=1e-4, atol=1e-4)
    assert (decode(latent * 2) - plain).abs().max() > 1e-2


def test_the_sdpa_preference_is_left_when_the_fast_path_is_turned_off():
    """The fast path holds its SDPA order only while it is on (no process-global state):
    turning it off, or closing the pipeline, restores the order found before."""
    order = torch._C._get_sdp_priority_order  # torch's only reader of the order
    before = order()
    pipe = PackForcingPipeline.from_name("tiny-random")
    pipe.enable_fast_path(FastPath(sdpa="math"))
    assert order()[0] == 0 and order() != before  # 0: math first
    pipe.disable_fast_path()
    assert order() == before and pipe.fast is None
    with PackForcingPipeline.from_name("tiny-random") as other:
        other.enable_fast_path(FastPath(sdpa="math"))
        assert order()[0] == 0
    assert order() == before
    with pytest.raises(ValueError, match="pass an ExitStack"):
        FastPath(sdpa="math").apply(pipe.backbone)
