"""Counting the host's reads of tensor values (each one waits for the GPU): the probe
bench/gpu_probes.py runs on a block step, and tests/test_fastpath.py checks on CPU."""

from __future__ import annotations

import contextlib
import inspect

import torch


@contextlib.contextmanager
def host_syncs():
    """Record every Python-level read of a tensor's value by the host (.item, .tolist,
    .cpu, .numpy, bool/float/int of a tensor): on a GPU each one waits for the device.
    Yields a list of (method, 'file:line') call sites, filled while the block runs."""
    names = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
    seen, originals = [], {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name, original):
        def recorded(self, *args, **kwargs):
            caller = inspect.stack(context=0)[1]
            seen.append((name, f"{caller.filename}:{caller.lineno}"))
            return original(self, *args, **kwargs)

        return recorded

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
