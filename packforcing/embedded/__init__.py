"""The embedded model: a small world model trained and shipped with this repository, a
client of the engine (packforcing's core never imports it).

    world.py    the procedural world (scene, renderer, camera loop)
    vocab.py    its prompt vocabulary, tokenizer and text encoder
    codec.py    the fixed codec in the VAE's role
    model.py    the model definition, camera clock, save / load
    data.py     training clips
    train.py    the training script (through the sampler's public block API)
    metrics.py  metrics of generated videos, from pixels
    ablate.py   the ablation lab (every policy, scored by the metrics)
    recall.py   the recall probe (bench/recall.py)
"""
