"""The training script: the loss reaches every trained module through the engine, a
fixed batch can be fitted, and a run writes weights and a curve that --resume extends."""

import json
import random

import pytest
import torch

from packforcing.embedded.data import own_revisit_clip, world_batch
from packforcing.embedded.model import EMBEDDED_CONFIG, build_embedded, load_embedded, trainable_modules
from packforcing.embedded.train_v10 import clip_loss, main, sample_sigmas
from packforcing.embedded.vocab import tokenize
from packforcing.events import Frames
from packforcing.sampler import PackForcingSampler
from packforcing.video import to_uint8


def test_sigmas_cover_the_whole_schedule():
    s = sample_sigmas(4000, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() <= 1
    assert (s > 0.95).float().mean() > 0.02  # the first Euler steps are trained too
    assert 0.45 < s.median() < 0.55


def test_loss_reaches_hr_compressor_and_text_encoder():
    torch.manual_seed(0)
    backbone = build_embedded(0)
    sampler = PackForcingSampler(backbone, EMBEDDED_CONFIG, seed=0)
    prompts, pixels, latent = world_batch(random.Random(0), 2, 5, backbone.codec)  # block 4 attends the compressed block 2
    assert latent.shape == (2, 16, 20, 16, 16)
    text = backbone.text_encoder(tokenize(prompts))
    losses = clip_loss(sampler, text, pixels, latent, torch.Generator().manual_seed(0), 0.3, self_history=1)
    assert losses.shape == (5, 2) and torch.isfinite(losses).all()
    losses.mean().backward()
    modules = trainable_modules(backbone)
    for name in ("hr", "text"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in modules[name].parameters()), name
    assert not sampler.cache.sink and not sampler.cache.mid  # the cache is left empty


def test_recall_selection_attends_the_source_and_trains_the_scores():
    """Block 10 of a clip revisits block 2, which only the mid bank holds: forced, the
    selection includes it; the selection loss reaches layer 0's query and key
    projections (the scoring layer). Negative control: unforced, the random weights'
    selection leaves it out."""
    torch.manual_seed(0)
    backbone = build_embedded(0)
    prompts, pixels, latent = world_batch(random.Random(0), 1, 11, backbone.codec)
    text = backbone.text_encoder(tokenize(prompts))

    def run(recall):
        sampler = PackForcingSampler(backbone, EMBEDDED_CONFIG, seed=0)
        chosen = {}
        set_selection = sampler.cache.set_selection
        sampler.cache.set_selection = lambda sel, scores=None: (chosen.__setitem__(sampler.cache.current, list(sel)), set_selection(sel, scores))
        out = {}
        losses = clip_loss(sampler, text, pixels, latent, torch.Generator().manual_seed(0), 0.0, recall_selection=recall, losses_out=out)
        return losses, chosen, out["selection"]

    losses, chosen, selection = run(1.0)
    assert losses.shape == (11, 1) and 2 in chosen[10] and len(chosen[10]) == EMBEDDED_CONFIG.top_k
    assert selection.ndim == 0 and torch.isfinite(selection)
    selection.backward()
    to_q, to_k = backbone.transformer.blocks[0].attn1.to_q, backbone.transformer.blocks[0].attn1.to_k
    assert to_q.weight.grad.abs().sum() > 0 and to_k.weight.grad.abs().sum() > 0
    _, free, _ = run(0.0)
    assert 2 not in free[10]


def test_revisit_batch_trains_only_revisits_at_high_noise():
    """loss_from / sigma_floor: blocks before loss_from only build the cache (their
    denoising pass runs without gradient and adds no loss); the others are noised to at
    least sigma_floor. Negative control: the defaults train every block at every level."""
    torch.manual_seed(0)
    backbone = build_embedded(0)
    prompts, pixels, latent = world_batch(random.Random(2), 2, 4, backbone.codec)
    text = backbone.text_encoder(tokenize(prompts))

    def run(**kw):
        sampler = PackForcingSampler(backbone, EMBEDDED_CONFIG, seed=0)
        seen, forward = [], sampler.forward

        def record(latent, timestep, text):
            seen.append((sampler.cache.current, torch.is_grad_enabled(), float(torch.as_tensor(timestep).min())))
            return forward(latent, timestep, text)

        sampler.forward = record
        return clip_loss(sampler, text, pixels, latent, torch.Generator().manual_seed(0), 0.0, **kw), seen

    losses, seen = run(loss_from=2, sigma_floor=0.9)
    assert losses.shape == (2, 2) and losses.requires_grad
    assert [(b, grad) for b, grad, _ in seen] == [(0, False), (1, False), (2, True), (3, True)]
    assert min(t for b, _, t in seen if b >= 2) >= 900.0
    losses, seen = run()
    assert losses.shape == (4, 2) and all(grad for _, grad, _ in seen)
    assert min(t for _, _, t in seen) < 900.0


def test_a_fixed_batch_can_be_fitted():
    backbone = build_embedded(0)
    sampler = PackForcingSampler(backbone, EMBEDDED_CONFIG, seed=0)
    params = [p for m in trainable_modules(backbone).values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    prompts, pixels, latent = world_batch(random.Random(1), 2, 2, backbone.codec)

    def loss():
        text = backbone.text_encoder(tokenize(prompts))
        return clip_loss(sampler, text, pixels, latent, torch.Generator().manual_seed(0), 0.0).mean()

    first = loss()
    for _ in range(12):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.7 * first.item()


def test_run_writes_weights_and_curve_and_resume_continues(tmp_path):
    args = ["--out", str(tmp_path), "--minutes", "0.001", "--batch", "1", "--short-batch", "1", "--clip-blocks", "2"]  # --threads would change the whole test session
    main(args)
    meta = json.loads((tmp_path / "config.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "training_curve.jsonl").read_text().splitlines()]
    assert meta["steps"] == len(rows) >= 1 and rows[-1]["step"] == meta["steps"]
    assert {"loss", "loss_first_block", "lr"} <= set(rows[0])
    load_embedded(str(tmp_path))  # the weights it wrote load
    with open(tmp_path / "training_curve.jsonl", "a") as f:  # a killed run's tail past its checkpoint
        f.write(json.dumps({**rows[-1], "step": meta["steps"] + 1}) + "\n")
    main(args + ["--resume"])
    resumed = [json.loads(line) for line in (tmp_path / "training_curve.jsonl").read_text().splitlines()]
    assert len(resumed) > len(rows)
    assert [r["step"] for r in resumed] == list(range(1, len(resumed) + 1))
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == len(resumed)


def test_resume_without_weights_says_how_to_train(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m packforcing.embedded.train"):
        main(["--out", str(tmp_path / "none"), "--resume", "--minutes", "0.001"])


def test_checkpoint_holds_the_weight_average(tmp_path):
    from safetensors.torch import load_file

    common = ["--minutes", "0.001", "--batch", "1", "--short-batch", "1", "--clip-blocks", "2"]  # one step
    main(common + ["--out", str(tmp_path / "raw"), "--ema", "0"])
    main(common + ["--out", str(tmp_path / "ema"), "--ema", "0.99"])
    raw, ema = (load_file(str(tmp_path / d / "generator.safetensors")) for d in ("raw", "ema"))
    start = {f"{prefix}.{k}": v for prefix, m in trainable_modules(build_embedded(0)).items() for k, v in m.state_dict().items()}
    moved = [k for k in raw if not torch.equal(raw[k], start[k])]
    assert moved  # the step changed weights
    for k in moved:  # first update, warm-up decay 0.1: the average moves 0.9 of the way
        torch.testing.assert_close(ema[k] - start[k], 0.9 * (raw[k] - start[k]), rtol=1e-4, atol=2e-7)


def test_run_with_a_revisit_batch_logs_its_losses(tmp_path):
    args = ["--out", str(tmp_path), "--minutes", "0.001", "--batch", "1", "--short-batch", "0", "--clip-blocks", "2",
            "--revisit-batch", "1", "--revisit-blocks", "11", "--self-history", "0"]
    main(args)
    row = json.loads((tmp_path / "training_curve.jsonl").read_text().splitlines()[0])
    # blocks 8-9 revisit the sink, block 10 a place only the mid bank holds
    assert row["loss_revisit_sink_high"] > 0 and row["loss_revisit_mid_high"] > 0
    assert "loss_revisit_entering_high" not in row
    # from block 6 on: blocks 6-7 show the first places coming back into view
    main(args + ["--out", str(tmp_path / "from6"), "--revisit-from", "6"])
    row = json.loads((tmp_path / "from6" / "training_curve.jsonl").read_text().splitlines()[0])
    assert row["loss_revisit_entering_high"] > 0 and row["loss_revisit_sink_high"] > 0 and row["loss_revisit_mid_high"] > 0
    with pytest.raises(ValueError, match="--revisit-from 9"):
        main(args + ["--out", str(tmp_path / "from9"), "--revisit-from", "9"])


def test_camera_clock_is_added_on_resume_trained_and_saved(tmp_path):
    """Weights trained without the clock load without one; --add-camera-clock gives them
    one, which the step trains (at --clock-lr-scale) and the checkpoint saves and loads.
    A clock of another period is refused, naming the value."""
    from packforcing.embedded.model import save_embedded

    save_embedded(build_embedded(0, camera_clock=False), str(tmp_path))
    assert load_embedded(str(tmp_path)).clock is None
    main(["--out", str(tmp_path), "--resume", "--add-camera-clock", "--minutes", "0.001", "--batch", "1", "--short-batch", "0", "--clip-blocks", "2", "--ema", "0"])
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["camera_clock_blocks"] == 8
    table = load_embedded(str(tmp_path)).clock.table
    assert table.shape == (8, 128)
    assert table[:2].abs().max() > 0 and table[2:].abs().max() == 0  # only the clip's two blocks were trained
    (tmp_path / "config.json").write_text(json.dumps({**meta, "camera_clock_blocks": 5}))
    with pytest.raises(ValueError, match="camera_clock_blocks=5"):
        load_embedded(str(tmp_path))


def test_own_revisit_clip_is_the_models_own_rollout_then_its_first_blocks_again():
    """The first loop is what sampling makes (frame for frame, same seed); the blocks
    after it repeat the rollout's first blocks, so their targets are the model's own past."""
    backbone = load_embedded("assets/embedded")
    prompt = "a red circle and a blue square, slow pan"
    streamed = [e.frames for e in PackForcingSampler(backbone, EMBEDDED_CONFIG, seed=3).stream(prompt, 8, "embedded") if isinstance(e, Frames)]
    sampler = PackForcingSampler(backbone, EMBEDDED_CONFIG, seed=3)
    latent, pixels = own_revisit_clip(sampler, backbone.encode_prompt(prompt), 10, 8)
    assert latent.shape == (1, 16, 40, 16, 16) and pixels.shape == (1, 3, 160, 64, 64)
    for c in range(8):
        assert (to_uint8(pixels[:, :, 16 * c : 16 * (c + 1)]) == streamed[c]).all(), c
    assert torch.equal(latent[:, :, 32:], latent[:, :, :8]) and torch.equal(pixels[:, :, 128:], pixels[:, :, :32])
    assert not torch.equal(latent[:, :, 4:8], latent[:, :, :4])  # negative control: blocks differ
    assert not sampler.cache.sink and not sampler.cache.mid  # the cache is left empty


def test_run_with_an_own_revisit_batch_logs_its_loss(tmp_path):
    args = ["--out", str(tmp_path), "--minutes", "0.001", "--batch", "1", "--short-batch", "0", "--clip-blocks", "2",
            "--own-revisit-batch", "1", "--own-revisit-blocks", "9"]
    main(args)
    row = json.loads((tmp_path / "training_curve.jsonl").read_text().splitlines()[0])
    assert row["loss_own_revisit_high"] > 0
    with pytest.raises(ValueError, match="--own-revisit-blocks 8"):
        main(args[:-1] + ["8"])
