"""The recipe trainer's cost levers change what is differentiated and which blocks are
trained, never a trained block's loss; and a run resumes from a state that loads with
weights_only=True exactly where it stopped."""

import json
import random

import pytest
import torch

from packforcing.embedded import camera_model
from packforcing.embedded.camera_data import is_mid_revisit, make_clips
from packforcing.embedded.teacher import ReconHead, TeacherConfig, clip_loss, read_hinge, recalled_sources
from packforcing.embedded.train import Run, TrainConfig, encode_texts, learning_rate
from packforcing.sampler import PackForcingSampler

# out-and-back over 8 blocks: right 4, left 4; block 5 films block 2's place (mid bank only)
PATHS = {"outback": 1.0}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    backbone = camera_model.build(0)
    clips = make_clips(random.Random(3), 2, 8, backbone.codec, paths=PATHS)
    return backbone, clips


def _loss(setup, seed=0, head=None, **teacher):
    backbone, clips = setup
    backbone.transformer.zero_grad(set_to_none=True)
    backbone.hr_compressor.zero_grad(set_to_none=True)
    sampler = PackForcingSampler(backbone, backbone.default_config, seed=0)
    tc = TeacherConfig(**{"force_source": 0.0, **teacher})
    return clip_loss(sampler, clips, encode_texts(backbone, clips), tc, torch.Generator().manual_seed(seed), head)


def test_the_clip_revisits_what_the_mid_bank_holds(setup):
    _, clips = setup
    assert [c for c, row in enumerate(clips.sources) if is_mid_revisit(row)] == [5]
    assert recalled_sources(clips) == {2}


def test_history_without_gradient_leaves_every_loss_unchanged(setup):
    full = _loss(setup, grad_history="all")
    cheap = _loss(setup, grad_history="sources")
    assert sorted(full.block_losses) == sorted(cheap.block_losses) == list(range(8))
    for c, loss in full.block_losses.items():
        assert cheap.block_losses[c] == pytest.approx(loss, rel=1e-5, abs=1e-7), c
    torch.testing.assert_close(cheap.total, full.total, rtol=1e-5, atol=1e-7)
    other = _loss(setup, seed=1, grad_history="sources")  # negative control: other noise, other losses
    assert abs(other.total.item() - full.total.item()) > 1e-3


def test_the_compressor_learns_only_through_the_sources_read(setup):
    backbone, _ = setup
    _loss(setup, grad_history="sources").total.backward()
    hr = [p.grad for p in backbone.hr_compressor.parameters()]
    assert all(g is not None for g in hr) and sum(g.abs().sum() for g in hr) > 0
    _loss(setup, grad_history="none").total.backward()
    assert all(p.grad is None for p in backbone.hr_compressor.parameters())


def test_blocks_that_recall_nothing_are_trained_at_the_given_rate(setup):
    none = _loss(setup, other_fraction=0.0)
    assert list(none.block_losses) == [5] and none.revisits == [5]
    some = _loss(setup, other_fraction=0.5)
    assert 5 in some.block_losses and 1 < len(some.block_losses) < 8
    every = _loss(setup, other_fraction=0.5)
    # the same draws: the trained subset's losses are the full recipe's
    for c, loss in some.block_losses.items():
        assert every.block_losses[c] == pytest.approx(loss, rel=1e-5, abs=1e-7)


def test_revisits_can_lose_their_prompt_alone(setup):
    # block 5 revisits a place only the mid bank holds; the others recall nothing
    prompted = _loss(setup, text_dropout=0.0)
    dropped = _loss(setup, text_dropout=1.0)
    mixed = _loss(setup, text_dropout=0.0, revisit_text_dropout=1.0)
    assert mixed.revisits == [5]
    assert mixed.block_losses[5] == pytest.approx(dropped.block_losses[5], rel=1e-5)
    assert abs(mixed.block_losses[5] - prompted.block_losses[5]) > 1e-4  # the prompt matters to it
    for c in set(mixed.block_losses) - {5}:
        assert mixed.block_losses[c] == pytest.approx(prompted.block_losses[c], rel=1e-5, abs=1e-7)


def test_bad_levers_are_named():
    with pytest.raises(ValueError, match="grad_history='some'.*all"):
        TeacherConfig(grad_history="some")
    with pytest.raises(ValueError, match="other_fraction=1.5"):
        TeacherConfig(other_fraction=1.5)
    with pytest.raises(ValueError, match="revisit_text_dropout=-0.1 must be in"):
        TeacherConfig(revisit_text_dropout=-0.1)
    with pytest.raises(ValueError, match=r"unknown fields \['batchsize'\]"):
        TrainConfig.from_dict({"batchsize": 3})
    with pytest.raises(ValueError, match="decay_steps=0: .*at least 1"):
        TrainConfig(decay_from=5, decay_steps=0)


def test_every_shipped_recipe_reads():
    from pathlib import Path

    from packforcing.embedded.train_autoencoder import AERecipe

    folder = Path(camera_model.__file__).parent / "recipes"
    recipes = sorted(folder.glob("*.json"))
    assert len(recipes) >= 10
    for path in recipes:  # an unknown or out-of-range field raises, naming it
        (AERecipe.load if path.name == "autoencoder.json" else TrainConfig.from_file)(str(path))
    v15 = TrainConfig.from_file(str(folder / "v15.json"))
    assert v15.teacher.revisit_text_dropout == 0.5 and v15.teacher.text_dropout == 0.1
    reads = {name: TrainConfig.from_file(str(folder / f"{name}.json")).teacher for name in ("v17", "v18", "v19")}
    assert (reads["v17"].read_weight, reads["v17"].read_floor) == (0.05, 0.2)
    assert (reads["v18"].read_weight, reads["v18"].read_floor) == (0.01, 0.2)
    v19 = reads["v19"]  # v18, the hinge above 0.5 only
    assert (v19.read_weight, v19.read_sigma_min, v19.revisit_sigma_floor) == (0.01, 0.5, 0.0)
    assert reads["v18"].read_sigma_min == 0.0 and reads["v18"].revisit_sigma_floor == 0.5
    assert v15.teacher.read_weight == 0.0  # the v15 line asks for no reading


def test_a_resumed_run_continues_where_it_stopped(tmp_path):
    recipe = {"batch": 2, "blocks": 8, "paths": PATHS, "threads": 1, "warmup": 2, "switch_prob": 0.0,
              "other_fraction": 0.5, "grad_history": "sources"}
    tc = TrainConfig.from_dict(recipe)
    straight = Run(tc, str(tmp_path / "a"))
    rows = [straight.train_step() for _ in range(3)]
    first = Run(tc, str(tmp_path / "b"))
    first.train_step(), first.train_step()
    first.save()
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)  # plain tensors and numbers only
    assert state["counters"]["step"] == 2 and json.loads(state["recipe"])["other_fraction"] == 0.5
    resumed = Run(tc, str(tmp_path / "b"))
    row = resumed.train_step()
    assert row["step"] == 3 and row["loss"] == pytest.approx(rows[2]["loss"], rel=1e-5)
    assert row["loss"] != pytest.approx(rows[1]["loss"], rel=1e-3)  # negative control: not a replayed step
    assert (tmp_path / "b" / "ckpts" / "2" / "generator.safetensors").exists()


def test_the_rebuild_head_reads_only_the_compressor(setup):
    """The auxiliary loss adds no term to the flow losses and trains the HR compressor,
    each token rebuilding the pooled latent cells under it (hand-checked shapes)."""
    backbone, clips = setup
    head = ReconHead(128, 16)
    tokens = torch.zeros(1, 128, 2, 2, 2)
    tokens[0, :, 1, 0, 1] = 1.0  # one token: frame 1, row 0, column 1
    out = head(tokens)
    assert out.shape == (1, 16, 2, 4, 4)
    bias = head.proj.bias.view(16, 2, 2)
    torch.testing.assert_close(out[0, :, 0, :2, :2], bias)  # a zero token gives the bias
    assert not torch.allclose(out[0, :, 1, :2, 2:], bias)  # the set token moves its own cells
    torch.testing.assert_close(out[0, :, 1, 2:, 2:], bias)
    plain = _loss(setup)
    with_head = _loss(setup, recon_weight=1.0, head=head)
    assert plain.recon is None and with_head.recon is not None and with_head.recon.item() > 0
    assert with_head.block_losses == pytest.approx(plain.block_losses, rel=1e-5)
    with_head.recon.backward()
    assert sum(p.grad.abs().sum() for p in backbone.hr_compressor.parameters()) > 0


def test_compressed_tokens_sit_inside_the_view_they_summarise(setup):
    """The camera model's block is a 4 x 4 x 4 token grid compressed to 2 x 2 x 2, so its
    compressed tokens sit at the centres of the 2 x 2 x 2 cells they cover: t in
    start + {0.5, 2.5}, h and w in {0.5, 2.5} (by hand). Placed with Wan's 4-token span
    they would fall at 1.5 and 5.5, outside the view's rows 0-3."""
    from packforcing.cache import BlockKV

    backbone, clips = setup
    sampler = PackForcingSampler(backbone, backbone.default_config, seed=0)
    placed = []
    place = sampler.memory.passes.rope.place
    sampler.memory.passes.rope.place = lambda *args: (placed.append(args), place(*args))[1]
    backbone.place.set_clip(clips.xs)
    text = encode_texts(backbone, clips)[0]
    with torch.no_grad():
        memory = sampler.memory
        lr = memory.lr_input(clips.pixels[:, :, 48:64])
        memory.compress(BlockKV(3, 12.0, 64), clips.latent[:, :, 12:16], lr, text)
    sampler.memory.passes.rope.place = place
    (start, spacing, center), = placed
    rows = [center[1] + spacing[1] * i for i in range(sampler.memory.grid[1])]
    frames = [start + center[0] + spacing[0] * i for i in range(sampler.memory.grid[0])]
    assert sampler.memory.grid == (2, 2, 2) and rows == [0.5, 2.5] and frames == [12.5, 14.5]


def test_the_reading_curriculum_keeps_mid_blocks_whole_at_its_rate(tmp_path):
    recipe = {"batch": 2, "blocks": 8, "paths": PATHS, "threads": 1, "switch_prob": 0.0, "other_fraction": 0.0}
    policies = {}
    for rate in (0.0, 1.0):
        run = Run(TrainConfig.from_dict({**recipe, "mix_full": rate}), str(tmp_path / str(rate)))
        row = run.train_step()
        policies[rate] = row["policy"]
        assert row["revisit_blocks"] == 2 and row["trained_blocks"] == 2  # block 5 of both clips
    assert policies == {0.0: "dynamic", 1.0: "full"}
    assert run.sampler.config.policy == "dynamic"  # sampling keeps the model's config


def test_a_step_with_no_trained_block_still_trains_what_it_has(tmp_path):
    """4 blocks of a loop never leave the recent window for a revisit (no mid-bank source),
    and other_fraction=0 leaves out every other block: only the rebuild head has a loss."""
    recipe = {"batch": 2, "blocks": 4, "paths": {"loop": 1.0}, "threads": 1, "switch_prob": 0.0,
              "other_fraction": 0.0, "recon_weight": 0.5}
    run = Run(TrainConfig.from_dict(recipe), str(tmp_path / "run"))
    before = [p.detach().clone() for p in run.head.parameters()]
    row = run.train_step()
    assert row["trained_blocks"] == 0 and row["loss"] is None and row["recon"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, run.head.parameters()))  # the head took its step
    row = Run(TrainConfig.from_dict({**recipe, "recon_weight": 0.0}), str(tmp_path / "none")).train_step()
    assert row["trained_blocks"] == 0 and row["recon"] is None and row["grad_norm"] == 0.0


def test_a_resumed_run_keeps_each_step_of_the_curve_once(tmp_path):
    from packforcing.embedded.train import main

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"batch": 1, "blocks": 4, "paths": {"loop": 1.0}, "threads": 1, "switch_prob": 0.0}))
    out = tmp_path / "run"
    main(["--recipe", str(recipe), "--out", str(out), "--max-steps", "2"])
    curve = out / "curve.jsonl"
    with open(curve, "a") as f:  # what a process stopped after its last checkpoint leaves behind
        f.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + json.dumps({"step": 4, "loss": 9.0}) + "\n")
    main(["--recipe", str(recipe), "--out", str(out), "--max-steps", "3"])
    rows = [json.loads(line) for line in curve.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] != 9.0


def test_a_run_starts_from_another_runs_average_and_keeps_its_prediction_type(tmp_path):
    from packforcing.embedded.train import main

    recipe = {"batch": 1, "blocks": 4, "paths": {"loop": 1.0}, "threads": 1, "switch_prob": 0.0}
    (tmp_path / "a.json").write_text(json.dumps(recipe))
    main(["--recipe", str(tmp_path / "a.json"), "--out", str(tmp_path / "a"), "--max-steps", "1"])
    ema = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["ema"]
    tc = TrainConfig.from_dict({**recipe, "init": str(tmp_path / "a"), "prediction_type": "sample", "seed": 5})
    run = Run(tc, str(tmp_path / "b"))
    assert run.step == 0 and run.backbone.prediction_type == "sample"
    assert all(torch.equal(p, e) for p, e in zip(run.params, ema, strict=True))
    assert not all(torch.equal(p, e) for p, e in zip(Run(TrainConfig.from_dict(recipe), str(tmp_path / "c")).params,
                                                     ema, strict=True))  # negative control: a fresh start
    run.train_step()
    run.save()
    assert camera_model.load(str(tmp_path / "b")).prediction_type == "sample"
    assert camera_model.load(str(tmp_path / "a")).prediction_type == "flow_prediction"
    with pytest.raises(ValueError, match="do not match"):
        Run(TrainConfig.from_dict({**recipe, "init": str(tmp_path / "a"), "recon_weight": 0.5}), str(tmp_path / "d"))


@pytest.mark.parametrize("sigma, ratio", [(0.1, 0.25), (0.05, 0.0625), (0.5, 1.0)])
def test_levels_below_the_loss_floor_weigh_sigma_over_floor_squared(setup, sigma, ratio):
    from unittest import mock

    from packforcing.embedded import teacher

    fixed = lambda batch, gen, floor=0.0: torch.full((batch,), sigma)  # noqa: E731
    with mock.patch.object(teacher, "sample_sigmas", fixed), torch.no_grad():
        plain = _loss(setup, other_fraction=1.0).block_losses
        floored = _loss(setup, other_fraction=1.0, loss_sigma_floor=0.2).block_losses
    assert sorted(plain) == sorted(floored) == list(range(8))
    for c in plain:
        assert floored[c] == pytest.approx(ratio * plain[c], rel=1e-5)


def test_the_rate_warms_up_holds_then_falls_to_zero(tmp_path):
    """Hand-worked: lr 1e-3, warmup 4, decay from step 10 over 5 steps."""
    tc = TrainConfig(lr=1e-3, warmup=4, decay_from=10, decay_steps=5)
    expected = {0: 2.5e-4, 3: 1e-3, 9: 1e-3, 10: 1e-3, 12: 6e-4, 14: 2e-4, 15: 0.0, 40: 0.0}
    assert {s: learning_rate(tc, s) for s in expected} == pytest.approx(expected, abs=1e-12)
    assert learning_rate(TrainConfig(lr=1e-3, warmup=4), 10**6) == 1e-3  # no decay unless asked
    recipe = {"batch": 2, "blocks": 8, "paths": PATHS, "threads": 1, "warmup": 1, "switch_prob": 0.0,
              "decay_from": 0, "decay_steps": 4}
    run = Run(TrainConfig.from_dict(recipe), str(tmp_path / "run"))
    rows = [run.train_step() for _ in range(2)]  # the optimizer steps at the rate the row reports
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 7.5e-4]) and run.opt.param_groups[0]["lr"] == rows[1]["lr"]
    from packforcing.embedded.train import main

    (tmp_path / "r.json").write_text(json.dumps({**recipe, "decay_from": None, "batch": 1, "blocks": 4}))
    main(["--recipe", str(tmp_path / "r.json"), "--out", str(tmp_path / "cli"), "--max-steps", "2",
          "--decay-from", "0", "--decay-steps", "4"])  # the decay set from the command line
    curve = [json.loads(line) for line in (tmp_path / "cli" / "curve.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in curve] == pytest.approx([1e-3, 7.5e-4])


def test_the_reading_loss_sees_each_layers_attention_mass_on_the_source(setup):
    """The reported log mass equals torch's own attention run with the source tokens'
    indicator as values; asking for it leaves every flow loss unchanged."""
    from unittest import mock

    from packforcing import attention
    from packforcing.attention import SelectionHook

    backbone, clips = setup
    sampler = PackForcingSampler(backbone, backbone.default_config, seed=0)
    texts = encode_texts(backbone, clips)
    calls, original = [], attention.sdpa

    def spy(q, k, v, bias=None):
        calls.append((q.detach(), k.detach(), bias))
        return original(q, k, v, bias)

    backbone.place.set_clip(clips.xs)
    gen = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad(), mock.patch.object(attention, "sdpa", spy):
            for c in range(6):
                x0 = clips.latent[:, :, c * 4 : (c + 1) * 4]
                hook = SelectionHook(sources=[2] if c == 5 else [])
                sampler.begin_block(c, hook=hook)
                calls.clear()
                sampler.forward(x0 + 0.5 * torch.randn(x0.shape, generator=gen), 500.0, texts[c])
                if c < 5:
                    assert hook.log_mass == []
                    sampler.memory.admit(sampler.write_block(c, x0, texts[c]), x0, None, texts[c])
            # block 5 attends sinks 0 and 1 (64 tokens each), mid 2 and 3 (8 each), recent 4, itself
            assert [(b.index, b.tokens) for b in sampler.memory.cache.attended()] == [
                (0, 64), (1, 64), (2, 8), (3, 8), (4, 64)]
    finally:
        sampler.memory.reset()
    assert len(hook.log_mass) == len(calls) == 4
    for (q, k, bias), got in zip(calls, hook.log_mass, strict=True):
        indicator = torch.zeros(k.shape[:2] + (1, 1))
        indicator[:, 128:136] = 1.0  # block 2's compressed tokens
        mass = original(q, k, indicator.expand(-1, -1, k.shape[2], 1), bias)[..., 0]  # (B, S_q, H)
        torch.testing.assert_close(got.exp(), mass.permute(0, 2, 1), rtol=1e-4, atol=1e-6)
    plain = _loss(setup)
    read = _loss(setup, read_weight=1.0)
    assert plain.read is None and read.read is not None and read.read.item() > 0
    assert read.block_losses == pytest.approx(plain.block_losses, rel=1e-6)
    read.read.backward()
    assert backbone.transformer.blocks[2].attn1.to_q.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="read_floor=0.0"):
        TeacherConfig(read_floor=0.0)


def test_the_reading_hinge_by_hand_and_only_on_the_kept_samples(setup):
    """floor 0.2; two layers, two samples, one head, two queries. Sample 0's hinges:
    layer 1 (log 2 + 0) / 2, layer 2 0, so log 2 / 4; sample 1's: log 4 / 2 and log 2, so log 2."""
    mass = [torch.tensor([[[0.1, 0.5]], [[0.2, 0.05]]]), torch.tensor([[[0.4, 0.4]], [[0.1, 0.1]]])]
    log_mass = [m.log() for m in mass]
    ln2 = 0.6931471805599453
    both = read_hinge(log_mass, 0.2, torch.tensor([True, True]))
    assert both.item() == pytest.approx((ln2 / 4 + ln2) / 2, rel=1e-5)
    assert read_hinge(log_mass, 0.2, torch.tensor([True, False])).item() == pytest.approx(ln2 / 4, rel=1e-5)
    assert read_hinge(log_mass, 0.2, torch.tensor([False, False])) is None
    assert read_hinge([], 0.2, torch.tensor([True, True])) is None
    # in a clip: no level reaches 1, so the gate at 1 drops the hinge, never a flow loss
    ungated = _loss(setup, read_weight=1.0, read_sigma_min=0.0)
    gated = _loss(setup, read_weight=1.0, read_sigma_min=1.0)
    assert ungated.read is not None and gated.read is None
    assert gated.block_losses == pytest.approx(ungated.block_losses, rel=1e-6)
    with pytest.raises(ValueError, match="read_sigma_min=1.5 must be in"):
        TeacherConfig(read_sigma_min=1.5)
