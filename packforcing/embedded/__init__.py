"""The embedded model: a small world model trained and shipped with this repository, a
client of the engine (packforcing's core never imports it).

    world.py    the procedural world (scene, renderer, camera loop)
    vocab.py    its prompt vocabulary, tokenizer and text encoder
    codec.py    the fixed codec in the VAE's role
    architecture.py  what the v10 and v11 models share (transformer shape, prompt encoder)
    model.py    the model definition, camera clock, save / load
    data.py     training clips
    train.py    the training script (through the sampler's public block API)
    metrics.py  metrics of generated videos, from pixels
    evaluate.py the evaluator (the metrics, and recall read from the trace)
    recall.py   the recall probe (bench/recall.py)
    panorama.py, camera_data.py, camera_model.py, train_camera.py: v11, the camera model
"""
