"""Audio tokenizer: waveform → log-mel spectrogram → frame or patch tokens, on the model's device.

The front end is a log-mel filterbank (torchaudio ``MelSpectrogram``), normalised per utterance or
with dataset statistics, and SpecAugment (Park et al. 2019, time and frequency masking) while
training. It lives inside the module, so feature extraction runs on the accelerator with the model
instead of in CPU loader workers. Two ways to cut the spectrogram into tokens:

* ``frames``: ``frames_per_token`` consecutive log-mel frames are stacked and projected to one token
  (as speech transformers subsample frames); tokens carry 1-D ``positions`` for the backbone's
  rotary embedding.
* ``patches``: non-overlapping time-frequency patches (AST, Gong et al. 2021, "AST: Audio
  Spectrogram Transformer") with fixed 2-D sin-cos positions (as in MAE, He et al. 2022) added to
  the tokens; ``positions`` is ``None``.

Clips of different lengths arrive zero-padded with ``lengths`` (samples per clip); the tokenizer
zeroes samples past each length, computes frames with constant (zero) edge padding, and turns
lengths into a key-padding mask. A frame therefore only sees its own clip's samples and zeros, so a
clip gives the same tokens alone or padded in a batch, and padding is never attended to.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from omniformer.argument_checks import require_valid
from omniformer.positions import sincos_2d
from omniformer.tokens import Tokens

TokenKind = Literal["frames", "patches"]
NormKind = Literal["utterance", "dataset", "none"]
OverflowKind = Literal["crop", "raise"]


def _samples(sample_rate: float, ms: float) -> int:
    """Samples in ``ms`` milliseconds at ``sample_rate``."""
    return round(sample_rate * ms / 1000)


class AudioSpectrogramTokenizer(nn.Module):
    """Turns mono waveforms (``B×samples``, plus optional ``lengths``) into tokens for the backbone.

    Args:
        dim: width of the backbone's residual stream.
        sample_rate: rate of the waveforms the model reads (the data module resamples to it).
        n_mels: mel bands of the filterbank.
        win_ms: analysis window length in milliseconds.
        hop_ms: hop between frames in milliseconds.
        n_fft: FFT size; ``None`` = the next power of two >= the window.
        f_min: lowest filterbank frequency (Hz).
        f_max: highest filterbank frequency (Hz); ``None`` = Nyquist.
        tokens: ``"frames"`` (stacked frames, 1-D positions) or ``"patches"`` (AST-style, 2-D sin-cos).
        frames_per_token: frames stacked into one token (``frames`` only).
        patch_size: ``[mel bands, frames]`` of one patch (``patches`` only); bands must divide ``n_mels``.
        normalize: ``"utterance"`` (each clip to zero mean, unit variance over its real frames),
            ``"dataset"`` (per-band statistics: ``norm_mean``/``norm_std`` if given, else estimated on
            the first ``norm_stats_frames`` real training frames and kept in the state dict), or
            ``"none"``.
        norm_mean: fixed dataset mean of the log-mel values (``dataset`` only).
        norm_std: fixed dataset standard deviation (``dataset`` only).
        norm_stats_frames: how many training frames the dataset statistics are estimated on.
        freq_masks: SpecAugment frequency masks per clip (0 = none); training only.
        freq_mask_width: widest frequency mask, in mel bands.
        time_masks: SpecAugment time masks per clip (0 = none); training only.
        time_mask_width: widest time mask, in frames.
        max_tokens: the most tokens one clip may give (including a CLS token); usually the backbone's
            ``max_seq_len``.
        overflow: what a longer clip does: ``"crop"`` (keep its beginning) or ``"raise"``.
        cls_token: prepend a learned CLS token (for ``pool: cls`` heads).
        dropout: dropout on the tokens.
    """

    def __init__(
        self,
        dim: int,
        sample_rate: int = 16000,
        n_mels: int = 64,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        tokens: TokenKind = "frames",
        frames_per_token: int = 2,
        patch_size: tuple[int, int] | list[int] = (16, 16),
        normalize: NormKind = "utterance",
        norm_mean: float | None = None,
        norm_std: float | None = None,
        norm_stats_frames: int = 100_000,
        freq_masks: int = 2,
        freq_mask_width: int = 8,
        time_masks: int = 2,
        time_mask_width: int = 10,
        max_tokens: int = 1024,
        overflow: OverflowKind = "crop",
        cls_token: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        require_valid(
            self.check_config,
            dim=dim,
            sample_rate=sample_rate,
            n_mels=n_mels,
            win_ms=win_ms,
            hop_ms=hop_ms,
            n_fft=n_fft,
            tokens=tokens,
            frames_per_token=frames_per_token,
            patch_size=patch_size,
            normalize=normalize,
            norm_mean=norm_mean,
            norm_std=norm_std,
            max_tokens=max_tokens,
            overflow=overflow,
            cls_token=cls_token,
        )
        win, hop = _samples(sample_rate, win_ms), _samples(sample_rate, hop_ms)
        n_fft = n_fft or 1 << (win - 1).bit_length()
        self.dim, self.sample_rate, self.n_mels = dim, sample_rate, n_mels
        self.win_length, self.hop_length, self.n_fft = win, hop, n_fft
        self.kind, self.normalize, self.overflow = tokens, normalize, overflow
        self.max_tokens, self.norm_stats_frames = max_tokens, norm_stats_frames

        # Constant (zero) edge padding instead of torchaudio's default reflection: a frame near a
        # clip's end then sees the same zeros alone as when the clip is padded in a batch.
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win,
            hop_length=hop,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            center=True,
            pad_mode="constant",
        )
        # iid masks: every clip of a batch gets its own mask positions and widths.
        self.spec_augment = nn.Sequential(
            *(
                torchaudio.transforms.FrequencyMasking(freq_mask_width, iid_masks=True)
                for _ in range(freq_masks)
            ),
            *(torchaudio.transforms.TimeMasking(time_mask_width, iid_masks=True) for _ in range(time_masks)),
        )

        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls_token else None
        if tokens == "frames":
            self.frames_per_token = frames_per_token
            self.proj = nn.Linear(frames_per_token * n_mels, dim)
            self.freq_patches, self.time_step = 1, frames_per_token
        else:
            patch_f, patch_t = (int(v) for v in patch_size)
            self.patch_size = (patch_f, patch_t)
            self.proj = nn.Conv2d(1, dim, kernel_size=(patch_f, patch_t), stride=(patch_f, patch_t))
            self.freq_patches, self.time_step = n_mels // patch_f, patch_t
        self.max_time_tokens = (max_tokens - (1 if cls_token else 0)) // self.freq_patches
        self.drop = nn.Dropout(dropout)
        self._position_cache: dict[tuple[int, str], Tensor] = {}

        self.register_buffer("stats_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("stats_sum", torch.zeros(n_mels, dtype=torch.float64))
        self.register_buffer("stats_sumsq", torch.zeros(n_mels, dtype=torch.float64))
        self.fixed_stats = None if norm_mean is None else (float(norm_mean), float(norm_std))

    # ---------------------------------------------------------------- front end
    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Number of log-mel frames of clips with ``lengths`` samples (centred frames: ``L // hop + 1``)."""
        return torch.div(lengths, self.hop_length, rounding_mode="floor") + 1

    def log_mel(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-mel spectrogram ``B×n_mels×T`` (natural log of power + 1e-6) and real frames per clip.

        Samples past each clip's length are zeroed first, so padding never leaks into real frames.
        Computed in float32 even under autocast (the STFT needs the precision).
        """
        waveform, lengths = self._check_inputs(waveform, lengths)
        samples = torch.arange(waveform.shape[1], device=waveform.device)
        waveform = waveform * (samples[None, :] < lengths[:, None])
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            mel = self.melspec(waveform.float())
        return torch.log(mel + 1e-6), self.frame_lengths(lengths)

    def _check_inputs(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        if waveform.ndim == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.ndim != 2 or not waveform.is_floating_point():
            raise ValueError(
                "the audio tokenizer expects float waveforms of shape B×samples (or B×1×samples), got "
                f"{waveform.dtype} of shape {tuple(waveform.shape)}; mix multi-channel audio to mono first"
            )
        batch, total = waveform.shape
        if lengths is None:
            return waveform, torch.full((batch,), total, device=waveform.device, dtype=torch.long)
        lengths = torch.as_tensor(lengths, device=waveform.device).long()
        if lengths.shape != (batch,):
            raise ValueError(
                f"lengths must have shape ({batch},) to match the waveforms, got {tuple(lengths.shape)}"
            )
        if batch and (int(lengths.min()) < 1 or int(lengths.max()) > total):
            raise ValueError(
                f"lengths must lie in [1, {total}] (the padded number of samples), got "
                f"min {int(lengths.min())}, max {int(lengths.max())}"
            )
        return waveform, lengths

    # ---------------------------------------------------------------- tokens
    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tokens:
        """Tokens for a batch of waveforms; ``lengths`` (samples per clip) marks zero padding."""
        mel, frames = self.log_mel(waveform, lengths)
        return self.tokens_from_log_mel(mel, frames)

    def tokens_from_log_mel(self, mel: Tensor, frame_lengths: Tensor | None = None) -> Tokens:
        """Tokens from a precomputed log-mel batch (``B×n_mels×T``) with real frames per clip.

        This is the second half of :meth:`forward`, for features computed elsewhere (e.g. in loader
        workers): length policy, normalisation, SpecAugment, embedding, positions and mask.
        """
        if mel.ndim != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"log-mel input must be B×{self.n_mels}×frames, got {tuple(mel.shape)}")
        batch, _, total = mel.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), total, device=mel.device, dtype=torch.long)
        mel, frame_lengths = self._limit_length(mel.float(), frame_lengths.to(mel.device).long())
        valid = torch.arange(mel.shape[2], device=mel.device)[None, :] < frame_lengths[:, None]  # B×T
        mel = self._normalize(mel, valid)
        if self.training and len(self.spec_augment):
            mel = self.spec_augment(mel)
        mel = mel * valid[:, None, :]  # padding is exactly zero, whatever the statistics

        step = self.time_step
        mel = F.pad(mel, (0, (-mel.shape[2]) % step))
        time_tokens = mel.shape[2] // step
        real_time_tokens = torch.div(frame_lengths + step - 1, step, rounding_mode="floor")
        time_index = torch.arange(time_tokens, device=mel.device)
        if self.kind == "frames":
            x = self.proj(mel.transpose(1, 2).reshape(batch, time_tokens, step * self.n_mels))
            mask = time_index[None, :] < real_time_tokens[:, None]
            positions = time_index.expand(batch, time_tokens)
        else:
            grid = self.proj(mel[:, None])  # B×D×freq_patches×time_tokens
            # Time-major order: a clip's real patches come first, the padded columns last.
            x = grid.permute(0, 3, 2, 1).reshape(batch, time_tokens * self.freq_patches, self.dim)
            x = x + self._patch_positions(time_tokens, x.device).to(x.dtype)
            mask = (time_index[None, :] < real_time_tokens[:, None]).repeat_interleave(self.freq_patches, 1)
            positions = None
        if self.cls is not None:
            x = torch.cat([self.cls.expand(batch, -1, -1).to(x.dtype), x], dim=1)
            mask = F.pad(mask, (1, 0), value=True)
            if positions is not None:
                positions = torch.arange(time_tokens + 1, device=x.device).expand(batch, -1)
        return Tokens(self.drop(x), mask=mask, positions=positions)

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The rules among the arguments in ``args`` (see :mod:`omniformer.argument_checks`)."""
        problems = []
        for name, kind in (("tokens", TokenKind), ("normalize", NormKind), ("overflow", OverflowKind)):
            choices = typing.get_args(kind)
            if name in args and args[name] not in choices:
                problems.append(f"{{{name}}}; choose {' or '.join(repr(c) for c in choices)}")
        rate = args.get("sample_rate")
        if rate is not None and rate <= 0:
            problems.append("{sample_rate} must be positive")
        elif rate is not None and "win_ms" in args and "hop_ms" in args:
            win, hop = _samples(rate, args["win_ms"]), _samples(rate, args["hop_ms"])
            if win < 2 or hop < 1:
                problems.append(
                    f"{{win_ms}} and {{hop_ms}} give a window of {win} and a hop of {hop} samples at "
                    "{sample_rate} Hz; use longer windows"
                )
            elif args.get("n_fft") is not None and args["n_fft"] < win:
                problems.append(f"{{n_fft}} is shorter than the window ({win} samples)")
        given = [args[k] is not None for k in ("norm_mean", "norm_std") if k in args]
        if given in ([True, False], [False, True]):
            problems.append("give both norm_mean and norm_std, or neither (got {norm_mean}, {norm_std})")
        if args.get("norm_std") is not None and args["norm_std"] <= 0:
            problems.append("{norm_std} must be positive")
        column = None  # tokens per time step, once the cut is valid
        if args.get("tokens") == "frames" and "frames_per_token" in args:
            if args["frames_per_token"] < 1:
                problems.append("{frames_per_token} must be >= 1")
            column = 1
        if args.get("tokens") == "patches" and "patch_size" in args and "n_mels" in args:
            patch = [int(v) for v in args["patch_size"]]
            if len(patch) != 2 or min(patch) < 1 or args["n_mels"] % patch[0]:
                problems.append(
                    "{patch_size}: the mel bands per patch must divide {n_mels}, and both sizes must be >= 1"
                )
            else:
                column = args["n_mels"] // patch[0]
            if args.get("dim", 0) % 4:
                problems.append("{dim}: 2-D sin-cos positions of patches need a width divisible by 4")
        budget = args.get("max_tokens", 0) - bool(args.get("cls_token"))
        if column and "max_tokens" in args and budget < column:
            problems.append(f"{{max_tokens}} leaves no room for one column of {column} patches")
        return problems

    def _limit_length(self, mel: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Apply the overflow policy to clips that would give more than ``max_tokens`` tokens."""
        max_frames = self.max_time_tokens * self.time_step
        if mel.shape[2] <= max_frames:
            return mel, frame_lengths
        # Read the lengths only when the policy needs them: a graph export (torch.export, ONNX) cannot
        # turn a tensor into a Python int, and a crop does not need one.
        longest = int(frame_lengths.max()) if self.overflow == "raise" and len(frame_lengths) else 0
        if longest > max_frames:
            worst = int(frame_lengths.argmax())
            tokens = math.ceil(longest / self.time_step) * self.freq_patches + (self.cls is not None)
            seconds = (longest - 1) * self.hop_length / self.sample_rate
            limit = (max_frames - 1) * self.hop_length / self.sample_rate
            raise ValueError(
                f"audio clip {worst} of the batch lasts {seconds:.2f} s and gives {tokens} tokens, more than "
                f"max_tokens={self.max_tokens} (about {limit:.2f} s); set the tokenizer's overflow='crop', "
                "crop clips with the data module's max_seconds, or allow more tokens (model.max_seq_len)"
            )
        return mel[:, :, :max_frames], frame_lengths.clamp(max=max_frames)

    def _normalize(self, mel: Tensor, valid: Tensor) -> Tensor:
        """Normalise log-mel values, counting only real frames (``valid``: B×T)."""
        if self.normalize == "none":
            return mel
        weights = valid[:, None, :].to(mel.dtype)  # B×1×T
        if self.normalize == "utterance":
            count = (weights.sum(dim=(1, 2)) * self.n_mels).clamp_min(1.0)
            mean = (mel * weights).sum(dim=(1, 2)) / count
            var = (((mel - mean[:, None, None]) * weights) ** 2).sum(dim=(1, 2)) / count
            return (mel - mean[:, None, None]) / (var[:, None, None].sqrt() + 1e-5)
        if self.fixed_stats is not None:
            mean, std = self.fixed_stats
            return (mel - mean) / std
        if self.training and float(self.stats_count) < self.norm_stats_frames:
            with torch.no_grad():
                data = mel.detach().double() * weights.double()
                self.stats_count += weights.sum().double()
                self.stats_sum += data.sum(dim=(0, 2))
                self.stats_sumsq += (data * mel.detach().double()).sum(dim=(0, 2))
        if float(self.stats_count) == 0:
            raise RuntimeError(
                "normalize='dataset' has no statistics yet: they are estimated while training; "
                "train first, load a trained checkpoint, or set norm_mean and norm_std"
            )
        mean = self.stats_sum / self.stats_count
        std = (self.stats_sumsq / self.stats_count - mean**2).clamp_min(1e-10).sqrt()
        return (mel - mean[None, :, None].to(mel.dtype)) / std[None, :, None].to(mel.dtype)

    def _patch_positions(self, time_tokens: int, device) -> Tensor:
        """2-D sin-cos positions of a ``time × frequency`` patch grid (cached per grid and device)."""
        key = (time_tokens, str(device))
        if key not in self._position_cache:
            self._position_cache[key] = sincos_2d(time_tokens, self.freq_patches, self.dim).to(device)
        return self._position_cache[key]

    def num_tokens(self, samples: int) -> int:
        """How many tokens a clip of ``samples`` samples gives (before the overflow policy)."""
        frames = samples // self.hop_length + 1
        return math.ceil(frames / self.time_step) * self.freq_patches + (self.cls is not None)
