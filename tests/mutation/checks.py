"""Each decision test, against the one-line change that breaks what it pins.

    .venv/bin/python tests/mutation/checks.py          # JSON: every test failed on its break?
    .venv/bin/python tests/mutation/checks.py -k rope,memory  # only test ids containing these

For every entry the change is made in a temporary copy of the repository, only that test
runs, and it must fail (the test's reference is not the code it checks). Entries that
break the tests' own references (dense_reference.py, a hand table) say so in `why`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import copy_repo, run_in_child  # noqa: E402

CD, SS, RD, CP, ME, PD, SC = (f"tests/test_{n}.py" for n in (
    "cache_decisions", "selection_scores", "rope_direction", "compressed_positions", "memory_edges", "parity_dynamic", "stream_contract"))
CACHE, SEL, ROPE, ATT, SAMP, MEM, COMP = (f"packforcing/{n}.py" for n in ("cache", "selection", "rope", "attention", "sampler", "memory", "compression"))

# (test, file, before, after, why)
BREAKS = [
    (f"{CD}::test_the_oldest_mid_block_is_evicted_and_the_bank_keeps_temporal_order", CACHE,
     "oldest = next(iter(self.mid))", "oldest = list(self.mid)[-1]", "the newest mid block is evicted"),
    (f"{CD}::test_recent_window_of_two_and_a_two_block_sink", CACHE,
     "if len(self.recent) > self.config.recent_blocks:", "if len(self.recent) >= self.config.recent_blocks:", "recent window one short"),
    (f"{CD}::test_bank_capacity_per_policy", "packforcing/config.py",
     'if self.policy == "fifo":\n            return self.top_k', 'if self.policy == "fifo":\n            return self.mid_capacity', "fifo archives as deep as dynamic"),
    (f"{CD}::test_the_block_leaving_the_recent_window_is_its_oldest", CACHE,
     "oldest = next(iter(self.recent))", "oldest = list(self.recent)[-1]", "the newest recent block leaves"),
    (f"{CD}::test_packing_order_and_shifts_hand_worked", CACHE,
     "for b in reversed(packed):", "for b in packed:", "packed in reverse order (mid before sink)"),
    (f"{CD}::test_packing_with_two_recent_blocks_and_without_repair", CACHE,
     "for b in reversed(list(self.recent.values())):", "for b in list(self.recent.values()):", "anchored on the newest recent block"),
    (f"{CD}::test_context_concatenates_in_packed_order_and_rotates_by_the_shift", CACHE,
     "return list(self.sink.values()) + [self.mid[m] for m in self.selected] + list(self.recent.values())",
     "return [self.mid[m] for m in self.selected] + list(self.sink.values()) + list(self.recent.values())", "mid concatenated before sink"),
    (f"{CD}::test_proportional_bias_is_the_log_of_the_exact_ratio", CACHE,
     "weight = math.log(self.tokens_per_block / self.compressed_tokens)", "weight = math.log(self.tokens_per_block // self.compressed_tokens)",
     "integer ratio"),
    (f"{CD}::test_token_accounting_hand_counted", CACHE,
     "(c.sink_blocks + c.recent_blocks + 1) * self.tokens_per_block", "(c.sink_blocks + c.recent_blocks) * self.tokens_per_block", "bound forgets the current block"),
    (f"{CD}::test_dynamic_waits_for_its_scores_the_others_do_not", CACHE,
     'return self.config.policy == "dynamic" and len(self.mid) > 0 and not self.selection_set',
     'return self.config.policy == "dynamic" and len(self.mid) > 0', "pending forever"),
    (f"{CD}::test_invariants_name_the_bad_state", CACHE,
     "len(self.selected) > c.top_k:", "len(self.selected) > c.top_k + 1:", "one block too many allowed"),
    (f"{CD}::test_clear_empties_every_partition", CACHE,
     "        self._rotation, self._bias = None, None\n        self.current = None", "        self._rotation, self._bias = None, None", "clear keeps the current block"),
    (f"{SS}::test_scores_are_the_dense_double_sum_of_pre_rope_first_layer_projections", ATT,
     "self._select(q_raw)", "self._select(q)", "scored on post-RoPE queries"),
    (f"{SS}::test_scores_are_the_dense_double_sum_of_pre_rope_first_layer_projections", ATT,
     "            block.key_sum = k_raw.sum(1)", "            block.key_sum = k.sum(1)", "scored on post-RoPE keys"),
    (f"{SS}::test_scores_are_the_dense_double_sum_of_pre_rope_first_layer_projections", ATT,
     "query_sum = query_sum + b.query_sum.to(query_sum)", "query_sum = query_sum", "recent blocks' queries ignored"),
    (f"{SS}::test_scores_are_the_dense_double_sum_of_pre_rope_first_layer_projections", ATT,
     "        query_sum = q_raw[:, :: self.query_stride].sum(1)", "        query_sum = q_raw.sum(1)", "query stride ignored"),
    (f"{SS}::test_each_wrong_reading_of_the_score_gives_other_numbers[mistake0]", ATT,
     "self._select(q_raw)", "self._select(q)", "the control's mistake (post-RoPE current queries) becomes the engine's"),
    (f"{SS}::test_each_wrong_reading_of_the_score_gives_other_numbers[mistake1]", ATT,
     "self._keep(layer, k, v, k_raw, q_raw)", "self._keep(layer, k, v, k_raw, q)", "the control's mistake (post-RoPE recent queries) becomes the engine's"),
    (f"{SS}::test_each_wrong_reading_of_the_score_gives_other_numbers[mistake2]", ATT,
     "            block.key_sum = k_raw.sum(1)", "            block.key_sum = k.sum(1)", "the control's mistake (post-RoPE keys) becomes the engine's"),
    (f"{SS}::test_scored_once_per_block_not_at_every_denoising_pass", CACHE,
     'return self.config.policy == "dynamic" and len(self.mid) > 0 and not self.selection_set',
     'return self.config.policy == "dynamic" and len(self.mid) > 0', "re-scored at every pass"),
    (f"{SS}::test_training_hook_gets_the_scored_query_and_its_required_blocks", ATT,
     "            self.hook.query_sum = query_sum", "            self.hook.query_sum = query_sum[:, :0]", "training's query sum lost"),
    (f"{SS}::test_training_hook_gets_the_scored_query_and_its_required_blocks", ATT,
     "required = [m for m in self.hook.required if m in cache.mid]", "required = []", "required blocks ignored"),
    (f"{SS}::test_scored_heads_and_scale_hand_worked", SEL,
     "int(round(query_sum.shape[1] * head_fraction))", "int(query_sum.shape[1] * head_fraction)", "heads truncated, not rounded"),
    (f"{SS}::test_factorised_scores_average_the_batch", SEL, "matrix.mean(0)", "matrix[0]", "first clip only"),
    (f"{SS}::test_flat_scores_degrade_to_fifo_newest_wins", SEL,
     "key=lambda m: (scores[m], m), reverse=True)", "key=lambda m: (scores[m], -m), reverse=True)", "ties go to the older block"),
    (f"{SS}::test_fifo_takes_the_k_newest_and_random_stays_in_the_bank", SEL, "return sorted(bank)[-k:]", "return sorted(bank)[:k]", "fifo takes the oldest"),
    (f"{SS}::test_brute_force_reference_is_the_literal_double_sum", "tests/dense_reference.py",
     ".sum(dim=(-1, -2)).mean() / math.sqrt(head_dim)", ".sum(dim=(-1, -2)).mean()", "the reference itself, unscaled"),
    (f"{RD}::test_positioned_rope_equals_wan_rotary_pos_embed", ROPE,
     "angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]", "angles = -positions.to(torch.float64)[:, None] * inv_freq[None, :]", "tables the other way round"),
    (f"{RD}::test_positioned_rope_equals_wan_rotary_pos_embed[5]", ROPE,
     "tt = t0 + ct + st * torch.arange", "tt = ct + st * torch.arange", "frame offset ignored"),
    (f"{RD}::test_a_fresh_wrapper_is_wan_rotary_pos_embed_itself", ROPE,
     "self.spacing = (1.0, 1.0, 1.0)", "self.spacing = (2.0, 1.0, 1.0)", "an unplaced wrapper spaced wrong"),
    (f"{RD}::test_attention_output_equals_wan_attn_processor", ROPE,
     "cos, sin = cos[..., 0::2], sin[..., 1::2]", "cos, sin = cos[..., 0::2], -sin[..., 1::2]", "rotates the other way"),
    (f"{RD}::test_written_keys_and_a_temporal_shift_equal_wan_keys_at_the_new_frame", ROPE,
     "    return angles.cos()[None, :, None], angles.sin()[None, :, None]", "    return angles.cos()[None, :, None], -angles.sin()[None, :, None]", "shift the other way"),
    (f"{RD}::test_shift_moves_only_the_temporal_channels_by_exactly_delta", ROPE,
     "return torch.cat([temporal, keys[..., t_dim:]], dim=-1)", "return torch.cat([temporal[..., :2], keys[..., 2:]], dim=-1)", "only the first pair moved"),
    (f"{CP}::test_the_hand_worked_centres_are_the_grid_row_major", CP,
     "(1.5, 5.5, 9.5, 13.5))", "(1.5, 9.5, 5.5, 13.5))", "the hand table itself, out of order"),
    (f"{CP}::test_context_pass_rotates_at_the_region_centres", SAMP,
     "center = tuple((s - 1) / 2 for s in self.token_span)", "center = tuple(s / 2 for s in self.token_span)", "centre off by half a token"),
    (f"{CP}::test_projection_keys_are_the_layers_own_projections_at_the_centres", SAMP,
     "grid_positions(*self.grid, block.start_frame, self.token_span, center)", "grid_positions(*self.grid, block.start_frame)", "compressed tokens at full-res spacing"),
    (f"{CP}::test_projection_keys_are_the_layers_own_projections_at_the_centres[hr+lr]", SAMP,
     'return hr if cfg.compression == "hr" else output + hr', 'return hr', "fused = HR alone"),
    (f"{CP}::test_context_pass_feeds_the_compressed_tokens_in[lr]", COMP, "LR_POOL = (2, 4, 4)", "LR_POOL = (2, 2, 2)", "LR pooled too little"),
    (f"{CP}::test_context_pass_feeds_the_compressed_tokens_in[hr]", SAMP,
     'return hr if cfg.compression == "hr" else output + hr', 'return output + hr', "HR alone fused with LR"),
    (f"{CP}::test_hr_branch_is_the_papers_schedule", COMP, "HR_WIDTHS = (32, 128, 512, 2048)", "HR_WIDTHS = (32, 128, 511, 2048)", "a width off by one"),
    (f"{CP}::test_lr_latent_is_cropped_or_zero_padded_to_the_grid", COMP,
     "pad = [0, target[2] - latent.shape[4],", "pad = [target[2] - latent.shape[4], 0,", "padded before, not after"),
    (f"{ME}::test_latent_frames_round_and_blocks_round_up", MEM,
     "return int(round(seconds * fps / dims.vae_temporal))", "return int(seconds * fps / dims.vae_temporal)", "latent frames truncated"),
    (f"{ME}::test_a_sliver_of_a_second_is_still_one_block", SAMP,
     "latent_frames = max(1, int(round(", "latent_frames = max(0, int(round(", "zero blocks for a short clip"),
    (f"{ME}::test_held_tokens_per_block_hand_counted", MEM,
     "recent_blocks = min(config.recent_blocks, blocks_done - sink_blocks)", "recent_blocks = config.recent_blocks", "recent window counted before it exists"),
    (f"{ME}::test_no_sink_the_first_block_is_recent", MEM,
     "return full_res + min(past, capacity) * compressed", "return full_res + past * compressed", "bank capacity ignored"),
    (f"{ME}::test_bounded_context_formula_hand_counted_off_the_paper_geometry", MEM,
     "(width // dims.vae_spatial // pw)", "(width / dims.vae_spatial // pw)", "token counts become floats"),
    (f"{ME}::test_the_papers_geometry_is_the_default", MEM, "832, 480, 16, 120.0", "832, 480, 16, 121.0", "paper length off by a second"),
    (f"{ME}::test_bounded_context_formula_hand_counted_off_the_paper_geometry", MEM,
     "context = sink_tokens + config.top_k * compressed + recent_tokens + per_block", "context = sink_tokens + config.top_k * compressed + recent_tokens",
     "context forgets the current block"),
    (f"{ME}::test_compressed_count_is_what_the_hr_branch_outputs[1]", MEM,
     "f, h, w = f // st, h // sh, w // sw", "f, h, w = max(f // st, 1), h // sh, w // sw", "a 1-frame block compressed anyway"),
    (f"{ME}::test_memory_table_rejects_what_cannot_be_counted", MEM,
     "    _check_positive(seconds=seconds, width=width, height=height, fps=fps)\n", "", "no validation"),
    (f"{PD}::test_dynamic_packed_stream_equals_dense_reference[context-pass]", ROPE,
     "    return angles.cos()[None, :, None], angles.sin()[None, :, None]", "    return angles.cos()[None, :, None], -angles.sin()[None, :, None]",
     "packed keys rotated the wrong way (trace still right)"),
    (f"{PD}::test_dynamic_packed_stream_equals_dense_reference[projection+proportional]", CACHE,
     "weight = math.log(self.tokens_per_block / self.compressed_tokens)", "weight = math.log(self.compressed_tokens / self.tokens_per_block)", "bias sign"),
    (f"{PD}::test_dynamic_packed_stream_equals_dense_reference[guided]", SAMP,
     "v = v_uncond + cfg.guidance_scale * (v - v_uncond)", "v = v + cfg.guidance_scale * (v - v_uncond)", "guidance from the wrong base"),
    (f"{PD}::test_reference_notices_packing_and_selection", CACHE,
     "if not self.config.rope_repair:", "if self.config.rope_repair:", "the engine stops packing: the control would now match"),
    (f"{SC}::test_geometry_hand_counted", SAMP,
     '"seconds_per_block": self.config.block_frames * b.codec.temporal_factor / b.fps', '"seconds_per_block": self.config.block_frames / b.fps', "seconds per block"),
    (f"{SC}::test_counters_timings_and_the_end", SAMP, 'timings={"transformer": t1 - t0,', 'timings={"transformer": t1 + t0,', "timing sign"),
    (f"{SC}::test_counters_timings_and_the_end", SAMP, "frames_total += frames.shape[0]", "frames_total = frames.shape[0]", "frame counter not summed"),
    (f"{SC}::test_every_pass_is_told_its_absolute_frame", SAMP,
     "self._forward(lr, 0.0, text, \"compressed\", out, block.start_frame, self.token_span, center)",
     "self._forward(lr, 0.0, text, \"compressed\", out, self.cache.current_start, self.token_span, center)", "compressed at the current block's frame"),
    (f"{SC}::test_a_stop_before_the_first_block", SAMP, "frames_total, done, stopped = 0, 0, False", "frames_total, done, stopped = 0, 1, False", "a block counted that never ran"),
    (f"{SC}::test_pixels_to_uint8_hand_worked", "packforcing/video.py", "+ 1) * 127.5)", "+ 1) * 127.0)", "scale off"),
    (f"{SC}::test_a_guided_batch_of_clips_keeps_each_clip_to_its_own_cache_rows", ATT,
     "ctx_k, ctx_v = ctx_k.repeat(repeats, 1, 1, 1), ctx_v.repeat(repeats, 1, 1, 1)",
     "ctx_k, ctx_v = ctx_k.repeat_interleave(repeats, 0), ctx_v.repeat_interleave(repeats, 0)", "cache rows interleaved, not tiled"),
    (f"{SC}::test_full_keeps_every_block_whole_and_window_none[full]", SAMP,
     "            cache.archive(leaving)\n", "            pass\n", "full drops the block leaving the recent window"),
    (f"{SC}::test_a_steered_camera_ends_with_its_run", SAMP,
     "        self.session.set_hook(None)\n        self.camera = None\n", "        self.session.set_hook(None)\n", "the last steer leaks into the next run"),
    (f"{SC}::test_refusals_name_the_problem", SAMP, "if self.compressed_tokens == 0 and config.compresses_mid:", "if False:", "too small a frame accepted"),
]


def main():
    workdir = tempfile.mkdtemp(prefix="packforcing-checks-")
    result_path = os.path.join(workdir, "failed.json")
    os.environ.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    sys.dont_write_bytecode = True
    import torch  # noqa: F401

    report = []
    only = sys.argv[sys.argv.index("-k") + 1].split(",") if "-k" in sys.argv else [""]  # substrings of the test ids
    try:
        copy_repo(workdir)
        for test, path, before, after, why in [b for b in BREAKS if any(o in b[0] for o in only)]:
            target = os.path.join(workdir, path)
            original = open(target).read()
            entry = {"test": test, "change": f"{path}: `{before.strip()}` -> `{after.strip()}`", "why": why}
            if original.count(before) != 1:
                report.append(entry | {"result": f"not applied: the line occurs {original.count(before)} times"})
                continue
            try:
                with open(target, "w") as f:
                    f.write(original.replace(before, after))
                outcome, _ = run_in_child(workdir, [test, "-q", "-p", "no:cacheprovider"], 300, result_path)
            finally:
                with open(target, "w") as f:
                    f.write(original)
            report.append(entry | {"result": "fails as it should" if outcome == "killed" else f"DID NOT FAIL ({outcome})"})
            print(f"{report[-1]['result']:20s} {test}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"checked": len(report), "failed_as_they_should": sum(r["result"] == "fails as it should" for r in report),
                      "entries": report}, indent=1))


if __name__ == "__main__":
    main()
