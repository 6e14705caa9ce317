"""The embedded model: a small world model trained and shipped with this repository, a
client of the engine (packforcing's core never imports it).

    world.py    the procedural world (scene, renderer, camera loop)
    vocab.py    its prompt vocabulary, tokenizer and text encoder
    codec.py    the fixed codec in the VAE's role
    architecture.py  what the v10 and v11 models share (transformer shape, prompt encoder)
    model.py    the shipped (v10) model: definition, camera clock, save / load
    data.py, train_v10.py  v10's training clips and its training script
    metrics.py  metrics of generated videos, from pixels
    evaluate.py the evaluator (the metrics, and recall read from the trace)
    recall.py   the recall probe (bench/recall.py)
    panorama.py, camera_data.py, camera_model.py: the camera model (v11, v12) and its world
    teacher.py, train.py  teacher forcing with its cost levers, and the recipe trainer
                (python -m packforcing.embedded.train --recipe recipes/v12.json --out runs/v12)
    autoencoder.py, train_autoencoder.py  a learned codec, the option to the fixed one
"""
