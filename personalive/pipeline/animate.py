"""The streaming animator: reference image + driving frames in, animated frames out, one per input, in order.

Recipe of one run (:meth:`Animator.animate`):

1. read ``window`` driving frames at a time; move them to the device once; preprocess in torch (keypoint input,
   motion-extractor keypoints, face boxes and crops: :func:`prepare_driving`);
2. window 0 only: start-up padding of ``P = (A - 1) * W`` frames whose keypoints and motion tokens go from the
   reference to the first driving frame, with latents noised to the staggered levels;
3. per window: pose canvases from the animated keypoints, then the :class:`WindowStep` (pose guider, motion
   encoder, denoising UNet, DDIM, VAE decode of the frames that reached t=0, shift);
4. hand out the decoded frames (from window ``A - 1`` on); decide the history keyframe (:mod:`.keyframes`).
   With ``overlap`` (the default on CUDA) the frames are copied to pinned host memory without waiting, and a
   window's frames are handed out only once the next window's step has been queued: the GPU has work while the
   caller encodes. The only host waits in the loop are that copy's event and, while a keyframe may still be
   added, the keyframe decision (which the next window depends on);
5. after the last driving frame: pad with the frames before it, reflected (upstream: ``frames[-13:-1][::-1]``),
   run ``A - 1`` more windows to flush, and drop every output frame that belongs to padding.

Only ``P + W`` prepared frames are kept (for the reflected tail), so memory does not grow with the video.

Random draws, all from one ``torch.Generator`` on the run's device, float32 then cast to the pipeline dtype, in
this order (the same as upstream's and the oracle's): draw 0, (1, 4, P, h, w): the start-up latents' noise;
draw 1 + i, (1, 4, W, h, w): the noise of window i's fresh latents. Draw 1 + i is taken just before window
``i - 1`` runs (its step appends window i's latents), and none is drawn for the last window's unused successor.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from personalive.pipeline import conditioning, keypoints
from personalive.pipeline.keyframes import KeyframeBank, append_keyframe
from personalive.pipeline.reference import ReferenceState, feature_extractor, fuse_reference, reference_pixels
from personalive.pipeline.scheduler import StaggeredDDIM
from personalive.pipeline.window import WindowStep, tensor_sizes

if TYPE_CHECKING:
    from personalive.config import RunConfig
    from personalive.device_plans import PlanBook

logger = logging.getLogger(__name__)

NoiseSource = Callable[[tuple[int, ...]], torch.Tensor]
# the networks the pipeline runs itself, outside the window step: reference fusion (CLIP, VAE encoder, reference
# UNet, motion extractor and encoder), driving keypoints, start-up pose features and motion tokens, keyframes
PIPELINE_NETWORKS: tuple[str, ...] = (
    "image_encoder",
    "vae",
    "reference_unet",
    "motion_extractor",
    "motion_encoder",
    "pose_guider",
)


@dataclass
class DrivingInputs:
    """Prepared driving frames: motion-extractor output (each (F, ...)) and face crops (F, 3, 224, 224) in [-1, 1]."""

    info: keypoints.KeypointInfo
    faces: torch.Tensor

    def __len__(self) -> int:
        return self.faces.shape[0]

    def frame(self, i: int) -> DrivingInputs:
        return DrivingInputs({k: v[i : i + 1] for k, v in self.info.items()}, self.faces[i : i + 1])

    @staticmethod
    def cat(items: list[DrivingInputs]) -> DrivingInputs:
        info = {k: torch.cat([it.info[k] for it in items]) for k in items[0].info}
        return DrivingInputs(info, torch.cat([it.faces for it in items]))


@torch.inference_mode()
def prepare_driving(models: Any, frames01: torch.Tensor, height: int, width: int, min_face_box: int) -> DrivingInputs:
    """(F, 3, H', W') in [0, 1] on the device -> keypoint info and keypoint-box face crops at the model resolution."""
    images = conditioning.resize(frames01, height, width)
    info = models.motion_extractor(conditioning.keypoint_pixels(images))
    boxes = keypoints.face_boxes(keypoints.driving_keypoints(info), height, width, min_face_box)
    return DrivingInputs(info, conditioning.crop_faces(images * 2 - 1, boxes))


@dataclass
class AnimatorStats:
    """Accumulated per-stage wall time (seconds; stages end with a device sync only where frames are handed out)."""

    conditioning: float = 0.0
    denoising: float = 0.0  # the window step: pose guider, motion encoder, UNet, DDIM, VAE decode
    keyframes: float = 0.0
    frames: int = 0
    windows: int = 0
    keyframes_added: int = 0
    keyframe_windows: list[int] = field(default_factory=list)


class Animator:
    """Streaming PersonaLive generation over one :class:`~personalive.pipeline.window.WindowStep`.

    ``models`` is a loaded model set (``personalive.weights.ModelSet``) holding at least
    :data:`PIPELINE_NETWORKS`; the pipeline runs on its ``device`` in its ``dtype``. ``overlap``: hand a window's
    frames out after queueing the next window (None: on CUDA, where the GPU runs ahead of the host). ``plans``:
    where the first reference fusion, driving preparation and window at each keyframe count record their cuDNN
    plans' shapes, for the next process to replay while it loads (:mod:`personalive.device_plans`).
    """

    def __init__(
        self,
        models: Any,
        config: RunConfig,
        step: WindowStep,
        overlap: bool | None = None,
        plans: PlanBook | None = None,
    ) -> None:
        self.models, self.config, self.step, self.plans = models, config, step, plans
        self.device, self.dtype = torch.device(models.device), models.dtype
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        self.gen = config.generation
        self.sizes = tensor_sizes(models, config)
        self.scheduler = StaggeredDDIM(config.scheduler, config.generation)
        self.feature_names = list(step.feature_names)
        self.stats = AnimatorStats()

    @property
    def keyframes_added(self) -> int:
        return self.stats.keyframes_added

    def recording(self, label: str) -> contextlib.AbstractContextManager[None]:
        """Record the block's planned calls under ``label`` (once per label and book; nothing without a book)."""
        return self.plans.recording(label) if self.plans is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ reference
    def fuse_reference(self, image: torch.Tensor, face: torch.Tensor | None = None) -> ReferenceState:
        """(H, W, 3) uint8 square reference on any device -> its :class:`ReferenceState`.

        ``face``: the motion encoder's (1, 3, 224, 224) face image in [-1, 1] (a landmark patch); None = the
        crop of the keypoints' face box.
        """
        pixels = reference_pixels(image, self.gen.height, self.gen.width, self.device)
        if face is not None:
            pixels.face = face.to(self.device)
        with self.recording("reference"):
            return fuse_reference(self.models, pixels, self.dtype, self.gen.min_face_box, self.step.project_reference)

    # ------------------------------------------------------------------------------------------ driving
    def animate(
        self,
        reference: ReferenceState,
        frames: Iterable[torch.Tensor],
        generator: torch.Generator | None = None,
        noise_source: NoiseSource | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield one (H, W, 3) uint8 CPU frame per driving frame ((H, W, 3) uint8 tensors), streamed, in order."""

        def prepared() -> Iterator[DrivingInputs]:
            chunk: list[torch.Tensor] = []
            for frame in frames:
                chunk.append(frame)
                if len(chunk) == self.gen.window:
                    yield self._prepare(chunk)
                    chunk = []
            if chunk:
                yield self._prepare(chunk)

        for out in self.animate_prepared(reference, prepared(), generator, noise_source):
            yield (out * 255).round().to(torch.uint8).permute(1, 2, 0)

    def _prepare(self, chunk: list[torch.Tensor]) -> DrivingInputs:
        start = time.perf_counter()
        frames01 = conditioning.to_nchw(
            torch.stack([f.to(self.device, non_blocking=True) for f in chunk]), self.device
        )
        with self.recording("driving"):
            out = prepare_driving(self.models, frames01, self.gen.height, self.gen.width, self.gen.min_face_box)
        self.stats.conditioning += time.perf_counter() - start
        return out

    # inference mode, not only no_grad: every window step input is then an inference tensor, as the step's own
    # outputs fed back are; torch.compile guards on that property, and a mix recompiled the UNet mid-run
    @torch.inference_mode()
    def animate_prepared(
        self,
        reference: ReferenceState,
        driving: Iterable[DrivingInputs],
        generator: torch.Generator | None = None,
        noise_source: NoiseSource | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield (3, H, W) float [0, 1] CPU frames, one per prepared driving frame (chunks of any length)."""
        w = self.gen.window
        pad = self.scheduler.padding_frames
        draw = noise_source or self._generator_noise(generator)
        run = _StreamState(self, reference, draw)
        history: deque[DrivingInputs] = deque(maxlen=pad + w)  # the last frames, for the reflected tail
        pending: list[DrivingInputs] = []
        waiting: _Frames | None = None  # the last window's frames, handed out after the next window is queued
        count = 0

        def window(inputs: DrivingInputs, last: bool, total: int | None = None) -> Iterator[torch.Tensor]:
            nonlocal waiting
            frames = run.window(inputs, last, total)
            if not self.overlap:
                yield from frames.hand_out()
                return
            if waiting is not None:
                yield from waiting.hand_out()
            waiting = frames

        for chunk in driving:
            for i in range(len(chunk)):
                item = chunk.frame(i)
                history.append(item)
                pending.append(item)
                count += 1
                if len(pending) == w:
                    yield from window(DrivingInputs.cat(pending), last=False)
                    pending = []
        if count == 0:
            return
        # tail: reflect about the last frame (upstream's frames[-13:-1][::-1]); clamp for very short videos
        buffered, total = list(history), -(-count // w) * w + pad
        first_kept = count - len(buffered)
        padding = [buffered[max(2 * count - 2 - j, 0) - first_kept] for j in range(count, total)]
        for k in range(0, len(pending + padding), w):
            inputs = DrivingInputs.cat((pending + padding)[k : k + w])
            yield from window(inputs, last=k + w >= len(pending + padding), total=count)
        if waiting is not None:
            yield from waiting.hand_out()
        run.decide_keyframe()

    def _generator_noise(self, generator: torch.Generator | None) -> NoiseSource:
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(self.gen.seed)
        device = generator.device

        def draw(shape: tuple[int, ...]) -> torch.Tensor:
            return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)

        return draw


class _StreamState:
    """The mutable state of one streamed run (latents window, features, keyframe bank, window counter)."""

    def __init__(self, animator: Animator, reference: ReferenceState, draw: NoiseSource) -> None:
        self.animator, self.ref, self.draw = animator, reference, draw
        self.gen, self.sched = animator.gen, animator.scheduler
        self.features = list(reference.keys_values)  # step inputs; grow by one image per history keyframe
        g = self.gen
        self.bank = KeyframeBank(
            reference.motion,
            g.keyframe_threshold,
            g.max_keyframes if g.history_keyframes else 0,
            first_window=2 * g.adaptive_steps + 1,
        )
        self.index = 0
        self.emitted = 0
        self.state: dict[str, torch.Tensor] = {}
        # the last window's keyframe decision (0-dim bool on the device), its outputs and its index: read only when
        # the next window is about to be built (decide_keyframe), so reading it does not idle the GPU
        self.undecided: tuple[torch.Tensor, dict[str, torch.Tensor], int] | None = None

    def _noised_reference(self, timesteps: torch.Tensor) -> torch.Tensor:
        n = timesteps.shape[0]
        latents = self.ref.latents[:, :, None].expand(-1, -1, n, -1, -1)
        noise = self.draw(tuple(latents.shape)).to(latents.device, latents.dtype)
        return self.sched.add_noise(latents, noise, timesteps)

    def _canvases(self, points: torch.Tensor) -> torch.Tensor:
        s = self.animator.sizes
        canvas = keypoints.draw_keypoints(points, s["canvas_height"], s["canvas_width"], self.animator.dtype)
        return canvas.permute(1, 0, 2, 3)[None]  # (1, 3, F, Hc, Wc)

    def _start(self, inputs: DrivingInputs) -> None:
        """Window 0's state: start-up latents, pose features and motion tokens of the P padding frames."""
        g, models, ref = self.gen, self.animator.models, self.ref
        pad = self.sched.padding_frames
        self.first = {k: v[:1] for k, v in inputs.info.items()}
        startup_latents = self._noised_reference(self.sched.startup_timesteps())
        new_latents = self._noised_reference(torch.tensor([self.sched.t_max] * g.window))
        kps = keypoints.startup_keypoints(
            ref.keypoint_info, self.first, pad, g.translation_scale, g.use_reference_scale
        )
        pose_fea = models.pose_guider(self._canvases(kps)).to(self.animator.dtype)
        first_motion = models.motion_encoder(inputs.faces[:1, :, None].to(self.animator.dtype))
        motion = conditioning.lerp_frames(ref.motion, first_motion.to(ref.motion.dtype), pad)
        self.state = {
            "latents": torch.cat([startup_latents, new_latents], dim=2),
            "pose_cond_fea": pose_fea,
            "motion_hidden_states": motion,
        }

    def window(self, inputs: DrivingInputs, last: bool, total: int | None = None) -> _Frames:
        """Queue one window; its output frames (at most ``total`` over the stream) come back to hand out."""
        self.decide_keyframe()
        # each keyframe count gives the step's attention new shapes
        with self.animator.recording(f"window:{self.bank.added}"):
            return self._window(inputs, last, total)

    def _window(self, inputs: DrivingInputs, last: bool, total: int | None) -> _Frames:
        animator, g = self.animator, self.gen
        start = time.perf_counter()
        if self.index == 0:
            self._start(inputs)
        kps = keypoints.animated_keypoints(
            self.ref.keypoint_info, self.first, inputs.info, g.translation_scale, g.use_reference_scale
        )
        step_inputs = dict(self.state)
        step_inputs["pose"] = self._canvases(kps)
        step_inputs["motion"] = inputs.faces.permute(1, 0, 2, 3)[None].to(animator.dtype)
        step_inputs["encoder_hidden_states"] = self.ref.embeddings
        if last:  # nothing follows: the shifted window is discarded, so draw no noise for it
            step_inputs["new_latents"] = torch.zeros_like(self.state["latents"][:, :, : g.window])
        else:
            step_inputs["new_latents"] = self._noised_reference(torch.tensor([self.sched.t_max] * g.window))
        for spec_name, feature in zip(animator.feature_names, self.features, strict=True):
            step_inputs[spec_name] = feature
        animator.stats.conditioning += time.perf_counter() - start
        start = time.perf_counter()
        out = animator.step(step_inputs)
        self.state = {
            "latents": out["next_latents"],
            "pose_cond_fea": out["next_pose_cond_fea"],
            "motion_hidden_states": out["next_motion_hidden_states"],
        }
        frames = _Frames(self, None, None, total)
        if self.index >= g.adaptive_steps - 1:
            frames = _Frames(self, *_to_host(out["frames"][0]), total)
        if self.bank.active(self.index):
            self.undecided = (self.bank.propose(out["new_motion_hidden_states"]), out, self.index)
        animator.stats.denoising += time.perf_counter() - start
        self.index += 1
        animator.stats.windows += 1
        return frames

    def decide_keyframe(self) -> None:
        """Add the last window's keyframe if its motion asked for one (a host wait for that window's step).

        Called when the next window's driving inputs are already prepared and their GPU work queued, just before
        the next window is built, so the wait overlaps the GPU's work instead of leaving the GPU idle while the
        host prepares; and once more at the end of the stream, so the keyframes recorded match upstream's.
        """
        if self.undecided is None:
            return
        is_keyframe, out, index = self.undecided
        self.undecided = None
        if bool(is_keyframe):
            self._add_keyframe(out, index)

    def _add_keyframe(self, out: dict[str, torch.Tensor], index: int) -> None:
        start = time.perf_counter()
        self.bank.accept(out["new_motion_hidden_states"])
        clean = out["clean_latents"][:, :, 0]  # (1, 4, h, w): the frame this window emitted
        keyframe = feature_extractor(self.animator.models)(clean, self.ref.embeddings)
        self.features = append_keyframe(self.features, self.animator.step.project_reference(keyframe))
        self.animator.stats.keyframes_added += 1
        self.animator.stats.keyframe_windows.append(index)
        self.animator.stats.keyframes += time.perf_counter() - start
        logger.debug("history keyframe added in window %d (%d so far)", index, self.bank.added)


def _to_host(frames: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """(W, 3, H, W) device frames -> float32 host copy; on CUDA into pinned memory, not waited for (+ its event)."""
    frames = frames.float()
    if frames.device.type != "cuda":
        return frames.cpu(), None
    host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


class _Frames:
    """One window's output frames on their way to the host; :meth:`hand_out` waits for the copy and yields them."""

    def __init__(self, run: _StreamState, host: torch.Tensor | None, done: Any, total: int | None) -> None:
        self.run, self.host, self.done, self.total = run, host, done, total

    def hand_out(self) -> Iterator[torch.Tensor]:
        if self.host is None:
            return
        stats = self.run.animator.stats
        if self.done is not None:
            start = time.perf_counter()
            self.done.synchronize()
            stats.denoising += time.perf_counter() - start
        for f in self.host:
            if self.total is not None and self.run.emitted >= self.total:
                break
            self.run.emitted += 1
            stats.frames += 1
            yield f
