"""The recall probe (packforcing.embedded.recall, run by bench/recall.py): its
selections attend what they claim, and its swapped-source control swaps exactly."""

import random

import pytest
import torch

from packforcing.embedded import recall
from packforcing.embedded.data import world_batch
from packforcing.embedded.model import EMBEDDED_DIR, load_embedded
from packforcing.embedded.vocab import tokenize


def test_recall_probe_oracle_attends_the_source_and_anti_never_does():
    backbone = load_embedded(EMBEDDED_DIR)
    prompts, pixels, latent = world_batch(random.Random(0), 1, 12, backbone.codec)
    with torch.no_grad():
        text = backbone.text_encoder(tokenize(prompts))
    runs = {s: recall.probe(backbone, text, pixels, latent, s, 0.7, 0) for s in ("oracle", "anti", "window")}
    # blocks 10-11 revisit blocks 2-3, which only the mid bank holds
    assert runs["oracle"][1][10:] == [True, True] and runs["anti"][1][10:] == [False, False]
    assert runs["oracle"][1][:10] == [None] * 10
    assert runs["oracle"][0][:10] == runs["anti"][0][:10]  # same noise, same selections before block 10
    assert runs["window"][0][8] != runs["oracle"][0][8]  # no mid block attended: block 8 changes


def test_recall_probe_swaps_sources_exactly_and_samples_revisits():
    """with_foreign_sources replaces exactly the sink and the revisit sources (blocks
    0-5) with another clip's (clip i gets clip i-1's); the sampled mode leaves the history-building losses
    untouched and switches to sampled errors from `sample_from` on."""
    backbone = load_embedded(EMBEDDED_DIR)
    prompts, pixels, latent = world_batch(random.Random(0), 2, 9, backbone.codec)
    fpx, flat = recall.with_foreign_sources(pixels, latent, 8, 4, 16)
    assert torch.equal(flat[0, :, :24], latent[1, :, :24]) and torch.equal(flat[1, :, :24], latent[0, :, :24])
    assert torch.equal(flat[:, :, 24:], latent[:, :, 24:]) and torch.equal(fpx[0, :, :96], pixels[1, :, :96])
    assert torch.equal(fpx[:, :, 96:], pixels[:, :, 96:])
    with torch.no_grad():
        text = backbone.text_encoder(tokenize(prompts))
    taught, _ = recall.probe(backbone, text, pixels, latent, "dynamic", 0.7, 0)
    samples = {}
    sampled, _ = recall.probe(backbone, text, pixels, latent, "dynamic", 0.7, 0, sample_from=8, samples=samples)
    again, _ = recall.probe(backbone, text, pixels, latent, "dynamic", 0.7, 0, sample_from=8)
    assert sampled[:8] == taught[:8] and sampled[8] != taught[8] and sampled == again
    assert list(samples) == [8] and samples[8].shape == (2, 16, 4, 16, 16)
    assert sampled[8] == pytest.approx(recall.sample_error(samples[8], latent, 8, 4))
    assert recall.sample_error(samples[8], latent, 8,
                               4) != pytest.approx(recall.sample_error(samples[8], latent.roll(1, dims=0), 8, 4))
