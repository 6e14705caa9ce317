"""Decoding a stream of blocks: inline, or one block ahead on a worker.

Ahead, block N is decoded by one worker thread (on a second CUDA stream on a GPU) while
block N+1 denoises, so the decode leaves the critical path. One worker decodes the
blocks in order, so the streaming decoder keeps its cache; the sampler yields Frames N
and Block N in the same order as inline, one block later.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .video import to_uint8


class Decoded:
    """One block's decode, done or under way: its pixels (on the device) and frames."""

    def __init__(self, future=None, pixels=None, seconds: float = 0.0, stream=None):
        self._future, self._pixels, self._frames, self.seconds, self._stream = future, pixels, None, seconds, stream

    def _join(self) -> None:
        if self._future is not None:
            self._pixels, self._frames, self.seconds = self._future.result()
            self._future = None
            if self._stream is not None:  # made on the side stream, read on the main one
                self._pixels.record_stream(self._stream)

    def pixels(self) -> torch.Tensor:
        self._join()
        return self._pixels

    def frames(self) -> np.ndarray:
        self._join()
        if self._frames is None:
            self._frames = to_uint8(self._pixels)
        return self._frames


class DecodeQueue:
    """The streaming decoder, inline (lag 0) or one block ahead on a worker (lag 1)."""

    def __init__(self, codec, ahead: bool, device):
        self.decoder = codec.stream_decoder()
        self.lag = 1 if ahead else 0
        self.cuda = torch.device(device).type == "cuda"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="packforcing-decode") if ahead else None
        self._side = torch.cuda.Stream() if ahead and self.cuda else None

    def submit(self, latent: torch.Tensor) -> Decoded:
        if self._pool is None:
            t0 = time.perf_counter()
            pixels = self.decoder.decode_next(latent)
            return Decoded(pixels=pixels, seconds=time.perf_counter() - t0)
        main = torch.cuda.current_stream() if self.cuda else None
        ready = None
        if self.cuda:
            ready = torch.cuda.Event()
            ready.record(main)
            latent.record_stream(self._side)  # not reused by the main stream while decoded
        return Decoded(future=self._pool.submit(self._decode, latent, ready), stream=main)

    def _decode(self, latent, ready):
        t0 = time.perf_counter()
        # grad mode and the current stream are per thread: set both here
        with torch.no_grad(), (torch.cuda.stream(self._side) if self.cuda else contextlib.nullcontext()):
            if ready is not None:
                self._side.wait_event(ready)
            pixels = self.decoder.decode_next(latent)
            frames = to_uint8(pixels)  # waits for the side stream only
        return pixels, frames, time.perf_counter() - t0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
