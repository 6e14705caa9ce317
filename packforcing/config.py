"""The one configuration object of the method.

Every knob of PackForcing lives here. Where the paper leaves a choice open, the field
says so and explains its default (see shared/DESIGN.md).
"""

import numbers
from dataclasses import asdict, dataclass, replace

# from least memory to most: the baselines window and full at the two ends
POLICIES = ("window", "fifo", "dynamic", "random", "full")
COMPRESSING_POLICIES = ("dynamic", "fifo", "random")  # the ones with a compressed mid bank
COMPRESSIONS = ("lr", "hr", "hr+lr")
KV_SOURCES = ("context-pass", "projection")
STEP_RULES = ("renoise", "euler")
RECACHE_MODES = ("none", "recent", "sink+recent", "all")
# What one request may ask for: the pipeline refuses more, the studio's controls end here.
MAX_PROMPT_CHARS = 500
MAX_TOP_K = 64
MAX_MID_CAPACITY = 256
MAX_SINK_FRAMES = 32
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class PackForcingConfig:
    # Geometry of generation, in latent frames.
    block_frames: int = 4  # B_f: latent frames generated per block (paper: 4)
    sink_frames: int = 8  # N_sink: first latent frames kept at full resolution forever (paper: 8)
    recent_blocks: int = 1  # full-resolution blocks kept beside the one being generated (paper: 1)

    # Mid bank: compressed history and its selection.
    top_k: int = 16  # compressed mid blocks attended per generated block (paper: 16)
    # Not stated in the paper. Its 4.2 GB (dynamic) leaves room for 22-24 archived blocks
    # beside sink + recent; 24 is the upper end. When full, the oldest block is evicted.
    mid_capacity: int = 24
    policy: str = "dynamic"  # dynamic | fifo | random, or the baselines window | full
    compression: str = "lr"  # lr (training-free) | hr | hr+lr (paper's fused default)
    # Not stated in the paper: how 182 compressed tokens become per-layer K/V.
    # context-pass: run them through the backbone at t=0 so each layer writes its own
    # K/V (no new weights, the training-free default). projection: each layer's own
    # to_k/to_v/norm_k applied directly to the compressed tokens (cheaper, shallower).
    kv_source: str = "context-pass"

    # Not stated in the paper: how much attention a compressed token may draw. A
    # compressed token stands for tokens_per_block / compressed_tokens full-resolution
    # tokens (32 for the embedded model, 34.3 at 832x480). proportional: add the log of
    # that count to its attention logits, so a compressed block can weigh what the block
    # it summarises would (token merging's proportional attention, Bolya et al. 2023).
    # Off by default, as the paper's model was trained. On the embedded model (v5), 8
    # compressed tokens among ~1,000 drew 0.04-0.2% of the attention (uniform: 0.8%);
    # with it, 2-5% for the revisit source (the v7 experiment trained with it).
    proportional_attention: bool = False

    # Dynamic selection score s_m = mean over scored heads of (sum_i q_i).(sum_j k_j)/sqrt(d).
    query_stride: int = 4  # keep every n-th query token when summing queries (paper: "subsampled")
    score_head_fraction: float = 0.5  # fraction of heads averaged (paper: half)
    # Not stated in the paper: which layer scores. One selection must be known before
    # the first layer attends, so the first layer (the only one that has seen this
    # step's queries by then) scores, on pre-RoPE queries and keys: content affinity,
    # independent of where the block sits in time.

    # Not in the paper: selection hysteresis. A selected mid block stays selected until a
    # challenger outscores it by this fraction of the block's score range (max - min over
    # the bank). 0 = off, the paper's fresh top-k per block; > 0 trades how fast the
    # selection follows the queries for fewer swaps (the unofficial implementation reports
    # that swaps flicker). Dynamic policy only.
    selection_hysteresis: float = 0.0

    # Prompt switches (not in the paper): which cached blocks a switch re-writes under the
    # new prompt (clean pass; compressed mid blocks re-run their compressed pass).
    # none | recent | sink+recent | all. LongLive re-caches everything its model attends
    # (its short window) once per switch, so no stale prompt steers what follows. Here the
    # attended context also holds the sink and the mid bank, which would remember the old
    # prompt forever: the default re-writes all of it. The cost is bounded by the cache
    # (one clean pass per cached block, one compressed pass per mid block) and each switch
    # event reports it; `recent` is the cheap option (LongLive's window alone).
    recache: str = "all"

    # RoPE repair: move attended blocks to packed temporal positions (paper fig. 2c).
    rope_repair: bool = True

    # Self-Forcing few-step flow-matching schedule.
    timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    shift: float = 5.0
    num_train_timesteps: int = 1000
    # How x moves from one noise level to the next after the model predicts x0.
    # renoise: x0 mixed with fresh noise (Self-Forcing; right for its distilled
    # few-step generator). euler: the flow ODE step, keeping the predicted noise
    # (x0 + sigma'/sigma (x - x0)); an undistilled model needs it: its x0 is a
    # posterior mean, and re-noising that mean at every step shrinks samples towards
    # it (blur; tests/test_sampler_trace.py measures this on Gaussian data).
    step_rule: str = "renoise"
    # Classifier-free guidance on the velocity, v_u + g (v_c - v_u). The unconditional
    # pass sees a zeroed text embedding and attends the same cache (which the prompt
    # wrote). 1.0 = off, the paper's setting: Self-Forcing's generator is distilled to
    # sample without guidance. When on, each step runs the two halves as one batch.
    guidance_scale: float = 1.0

    def __post_init__(self):
        _check_choice("policy", self.policy, POLICIES)
        _check_choice("compression", self.compression, COMPRESSIONS)
        _check_choice("kv_source", self.kv_source, KV_SOURCES)
        _check_choice("step_rule", self.step_rule, STEP_RULES)
        _check_choice("recache", self.recache, RECACHE_MODES)
        if not isinstance(self.selection_hysteresis, (int, float)) or not 0.0 <= self.selection_hysteresis <= 1.0:
            raise ValueError(f"selection_hysteresis={self.selection_hysteresis!r} must be in [0, 1] (0 = off)")
        _check_int("block_frames", self.block_frames, 1)
        _check_int("sink_frames", self.sink_frames, 0)
        if self.sink_frames % self.block_frames:
            raise ValueError(
                f"sink_frames={self.sink_frames} must be a multiple of block_frames={self.block_frames} "
                "(the sink holds whole blocks)"
            )
        _check_int("recent_blocks", self.recent_blocks, 1)
        _check_int("top_k", self.top_k, 0)
        _check_int("mid_capacity", self.mid_capacity, 0)
        if self.policy in ("dynamic", "random") and self.mid_capacity < self.top_k:
            raise ValueError(
                f"mid_capacity={self.mid_capacity} is smaller than top_k={self.top_k}; "
                f"policy {self.policy!r} selects top_k blocks out of the bank, so mid_capacity must be >= top_k"
            )
        _check_int("query_stride", self.query_stride, 1)
        if not 0.0 < self.score_head_fraction <= 1.0:
            raise ValueError(f"score_head_fraction={self.score_head_fraction} must be in (0, 1]")
        if not self.timesteps or any(not 0 < t <= self.num_train_timesteps for t in self.timesteps):
            raise ValueError(
                f"timesteps={self.timesteps} must be a non-empty list of values in (0, {self.num_train_timesteps}]"
            )
        if list(self.timesteps) != sorted(self.timesteps, reverse=True):
            raise ValueError(f"timesteps={self.timesteps} must be decreasing")
        if not 0.0 <= self.guidance_scale <= 20.0:
            raise ValueError(f"guidance_scale={self.guidance_scale} must be in [0, 20] (1 = off, 0 = unconditional)")
        if self.shift <= 0:
            raise ValueError(f"shift={self.shift} must be > 0")

    # --- derived quantities -------------------------------------------------------
    @property
    def sink_blocks(self) -> int:
        return self.sink_frames // self.block_frames

    @property
    def compresses_mid(self) -> bool:
        return self.policy in COMPRESSING_POLICIES

    @property
    def bank_capacity(self) -> int:
        """Blocks the mid bank archives.

        FIFO only ever attends the k newest blocks, so archiving older ones would be
        memory spent on blocks it can never select: its bank is top_k deep. This is
        what makes the paper's FIFO row 4.0 GB against dynamic's 4.2 GB.
        """
        if self.policy == "fifo":
            return self.top_k
        if self.policy == "window":
            return 0
        return self.mid_capacity

    @property
    def sigmas(self) -> tuple[float, ...]:
        """Noise levels of the warped timesteps: s' = shift*s / (1 + (shift-1)*s)."""
        out = []
        for t in self.timesteps:
            s = t / self.num_train_timesteps
            out.append(self.shift * s / (1.0 + (self.shift - 1.0) * s))
        return tuple(out)

    def replace(self, **changes) -> "PackForcingConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["timesteps"] = list(self.timesteps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PackForcingConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        if "timesteps" in d:
            d["timesteps"] = tuple(float(t) for t in d["timesteps"])
        return cls(**d)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={shown(value)} is not allowed; choose one of {', '.join(allowed)}")


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


def check_number(name: str, value, low: float, high: float, integer: bool = False):
    """`value` as an int (integer=True) or a float in [low, high], else a ValueError that
    names it and the range. Accepts what a UI or an API sends: NaN, inf, 1e30, strings."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number; got {shown(value)}")
    allowed = f"allowed {low:,} to {high:,}" if integer else f"allowed {low:g} to {high:g}"
    if not (low <= value <= high):  # False for NaN; exact for huge ints
        raise ValueError(f"{name}={_number_text(value)} is out of range; {allowed}")
    if integer and value != int(value):
        raise ValueError(f"{name}={_number_text(value)} is not a whole number; {allowed}")
    return int(value) if integer else float(value)


def _number_text(value) -> str:
    if isinstance(value, int):
        if abs(value) < 10**15:
            return f"{value}"
        if value.bit_length() < 1000:
            return f"{float(value):g}"
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    return f"{value:g}"


def shown(value, limit: int = 40) -> str:
    """A value as an error message may quote it: plain values only, cut to `limit`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _number_text(value)
    if value is None or isinstance(value, (bool, float, str)):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    return f"a {type(value).__name__}"
