"""Clips longer than a model's window, read whole (issue 18): the windows a clip is cut into,
and how their results join.

- CTC (`transcribe` on wav2vec2 and kin): windows of CTC_WINDOW_S overlapping by twice
  CTC_STRIDE_S, both whole numbers of the model's hop (samples per output frame); each
  keeps the frames of its middle (the first and last windows keep their outer edges too),
  so every frame comes from a window in which it had context on both sides, and the kept
  frames are the clip's frames, each once: one greedy decoding over all of them (the
  transformers ASR pipeline's chunking, as its docs describe it).
- Sequence to sequence (Whisper): windows of the model's own 30 s input, overlapping by
  twice SEQ2SEQ_STRIDE_S, each transcribed, the texts joined where their token sequences
  overlap best (`join_overlapping`).
- Classification (`classify-audio`): windows of CLASSIFY_WINDOW_S, the last one ending at
  the clip's end (no scrap of a window weighs as much as a whole one); probabilities mean.

Every row says the windows it was read in, as [start, end] seconds."""

from collections.abc import Sequence
from dataclasses import dataclass

CTC_WINDOW_S = 20.0
CTC_STRIDE_S = 4.0
SEQ2SEQ_STRIDE_S = 5.0
CLASSIFY_WINDOW_S = 10.0


@dataclass(frozen=True)
class Window:
    start: int  # samples of the clip: [start, end)
    end: int
    keep_start: int  # the part whose frames are kept (CTC): [keep_start, keep_end)
    keep_end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def seconds(self, rate: int) -> list[float]:
        return [round(self.start / rate, 3), round(self.end / rate, 3)]


def strided(samples: int, window: int, stride: int) -> list[Window]:
    """Windows of `window` samples, each overlapping the next by 2 x `stride`; each keeps all
    but `stride` at a side it shares with a neighbour."""
    if samples <= window:
        return [Window(0, samples, 0, samples)]
    if window <= 2 * stride:
        raise ValueError(f"a window of {window} samples cannot keep its middle past 2 x {stride}")
    out, start = [], 0
    while True:
        end = min(start + window, samples)
        last = end >= samples
        keep_start = start + (stride if start > 0 else 0)
        out.append(Window(start, end, keep_start, end if last else end - stride))
        if last:
            return out
        start += window - 2 * stride


def tiled(samples: int, window: int) -> list[Window]:
    """Windows of `window` samples side by side, the last one ending at the clip's end."""
    if samples <= window:
        return [Window(0, samples, 0, samples)]
    starts = list(range(0, samples - window, window)) + [samples - window]
    return [Window(s, s + window, s, s + window) for s in starts]


def kept_frames(window: Window, frames: int, hop: int) -> slice:
    """The frames of a window's output (`frames` of them, `hop` samples apart) that its kept
    samples made. Windows start on multiples of `hop` (strided_by_hop), so frame f of a
    window is frame start/hop + f of the clip: the kept ranges meet exactly, none dropped,
    none twice, and the last window's own frames reach the clip's last one."""
    first = (window.keep_start - window.start) // hop
    if window.keep_end == window.end:  # it keeps its end: every frame it has
        return slice(first, frames)
    return slice(first, min(frames, (window.keep_end - window.start) // hop))


def strided_by_hop(samples: int, window: int, stride: int, hop: int) -> list[Window]:
    """strided() with the window and stride whole numbers of `hop` samples."""
    return strided(samples, max(hop, window // hop * hop), stride // hop * hop)


def join_overlapping(parts: Sequence[Sequence[int]], least: int = 2) -> list[int]:
    """Token sequences of consecutive overlapping windows as one: where the end of what is
    joined so far and the start of the next agree best (most tokens equal, at least `least`
    of them), each keeps its side of the middle of that overlap; where nothing agrees,
    they are put end to end."""
    joined = list(parts[0]) if parts else []
    for part in parts[1:]:
        best, cut = 0.0, (len(joined), 0)
        for shift in range(1, min(len(joined), len(part)) + 1):
            left, right = joined[-shift:], part[:shift]
            matches = sum(a == b for a, b in zip(left, right, strict=True))
            score = matches / shift + shift / 10_000  # the longer of equal agreements
            if matches >= least and score > best:
                best = score
                middle = shift // 2
                cut = (len(joined) - shift + middle, middle)
        joined = joined[: cut[0]] + list(part[cut[1] :])
    return joined
