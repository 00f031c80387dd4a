"""The official ``pretrained_weights`` layout as one table: every file, where it comes from, what loads it.

Layout (one root; the release's file names)::

    personalive/{denoising_unet,reference_unet,motion_encoder,pose_guider,temporal_module,motion_extractor}.pth
    sd-image-variations-diffusers/model_index.json, unet/config.json (+ weights, unused: every UNet key comes
        from the .pth files), image_encoder/config.json + pytorch_model.bin or model.safetensors
    sd-vae-ft-mse/config.json + diffusion_pytorch_model.bin or .safetensors
    taesd/config.json + diffusion_pytorch_model.safetensors   (optional: model.decoder=taesd)
    personalive/config.json   (optional, not in the release: sizes of a tiny/random layout, see model_sizes)

:data:`FILES` is read by the download (Hub sources), the loader and the check (paths, which network a file
holds) and the random-weights writer (where to write). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PERSONALIVE_DIR = "personalive"
BASE_DIR = "sd-image-variations-diffusers"
VAE_DIR = "sd-vae-ft-mse"
PERSONALIVE_REPO = "huaichang/PersonaLive"
IMAGE_VARIATIONS_REPO = "lambdalabs/sd-image-variations-diffusers"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
TAESD_DIR = "taesd"  # upstream's configs/prompts/personalive_offline.yaml: vae_tiny_path ./pretrained_weights/taesd
TAESD_REPO = "madebyollin/taesd"
TEMPORAL_KEY = ".temporal_modules."  # keys of the denoising UNet stored in temporal_module.pth
NETWORKS = (
    "pose_guider",
    "motion_encoder",
    "motion_extractor",
    "vae",
    "image_encoder",
    "reference_unet",
    "denoising_unet",
)


@dataclass(frozen=True)
class LayoutFile:
    """One file of the layout: its path under the root and its source on the Hugging Face Hub.

    ``accepted`` lists other names the loader takes in its place (tried first), e.g. a ``.safetensors`` twin.
    """

    path: str
    repo_id: str
    filename: str
    accepted: tuple[str, ...] = ()


def _personalive(name: str) -> LayoutFile:
    # PersonaLive's repository keeps its checkpoints under pretrained_weights/personalive/
    return LayoutFile(f"{PERSONALIVE_DIR}/{name}.pth", PERSONALIVE_REPO, f"pretrained_weights/personalive/{name}.pth")


def _base(name: str, accepted: tuple[str, ...] = ()) -> LayoutFile:
    return LayoutFile(f"{BASE_DIR}/{name}", IMAGE_VARIATIONS_REPO, name, tuple(f"{BASE_DIR}/{a}" for a in accepted))


def _vae(name: str, accepted: tuple[str, ...] = ()) -> LayoutFile:
    return LayoutFile(f"{VAE_DIR}/{name}", VAE_REPO, name, tuple(f"{VAE_DIR}/{a}" for a in accepted))


# role -> file; the roles are WeightsLayout's attribute names
FILES: dict[str, LayoutFile] = {
    "denoising_unet": _personalive("denoising_unet"),
    "temporal_module": _personalive("temporal_module"),
    "reference_unet": _personalive("reference_unet"),
    "motion_encoder": _personalive("motion_encoder"),
    "pose_guider": _personalive("pose_guider"),
    "motion_extractor": _personalive("motion_extractor"),
    "model_index": _base("model_index.json"),
    "unet_config": _base("unet/config.json"),
    "unet_weights": _base("unet/diffusion_pytorch_model.bin", ("unet/diffusion_pytorch_model.safetensors",)),
    "image_encoder_config": _base("image_encoder/config.json"),
    "image_encoder_weights": _base("image_encoder/pytorch_model.bin", ("image_encoder/model.safetensors",)),
    "vae_config": _vae("config.json"),
    "vae_weights": _vae("diffusion_pytorch_model.bin", ("diffusion_pytorch_model.safetensors",)),
    # optional: the tiny autoencoder of model.decoder=taesd (not needed by the default run, so not required)
    "taesd_config": LayoutFile(f"{TAESD_DIR}/config.json", TAESD_REPO, "config.json"),
    "taesd_weights": LayoutFile(
        f"{TAESD_DIR}/diffusion_pytorch_model.safetensors", TAESD_REPO, "diffusion_pytorch_model.safetensors"
    ),
}
# network -> the roles of the weight file(s) it is loaded from (the denoising UNet: two files, merged)
NETWORK_FILES: dict[str, tuple[str, ...]] = {
    "denoising_unet": ("denoising_unet", "temporal_module"),
    "reference_unet": ("reference_unet",),
    "motion_encoder": ("motion_encoder",),
    "pose_guider": ("pose_guider",),
    "motion_extractor": ("motion_extractor",),
    "vae": ("vae_weights",),
    "image_encoder": ("image_encoder_weights",),
}
CONFIG_ROLES = ("unet_config", "image_encoder_config", "vae_config")  # read by the loader besides the weights
SIZES_FILE = "personalive/config.json"
ORACLE_SIZES_FILE = "oracle_config.json"  # the upstream oracle's layout describes itself here


@dataclass(frozen=True)
class WeightsLayout:
    """Paths of every file of the official layout under ``root``: ``layout.<role>`` for each role of :data:`FILES`."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def path(self, role: str) -> Path:
        """The file of ``role``: an accepted twin when one exists, else the release's name."""
        entry = FILES[role]
        for name in entry.accepted:
            if (self.root / name).is_file():
                return self.root / name
        return self.root / entry.path

    def __getattr__(self, role: str) -> Path:
        if role in FILES:
            return self.path(role)
        raise AttributeError(f"{type(self).__name__} has no attribute {role!r}")

    @property
    def sizes_file(self) -> Path:
        return self.root / SIZES_FILE

    @property
    def oracle_sizes_file(self) -> Path:
        return self.root / ORACLE_SIZES_FILE

    def network_files(self, network: str) -> list[Path]:
        """The weight file(s) one network is loaded from."""
        return [self.path(role) for role in NETWORK_FILES[network]]

    def required_files(self) -> list[Path]:
        """Files the loader reads (the base UNet weights and model_index.json are not needed)."""
        files = [p for n in NETWORKS for p in self.network_files(n)]
        return files + [self.path(role) for role in CONFIG_ROLES]

    def hashed_files(self) -> list[Path]:
        sizes = [p for p in (self.sizes_file, self.oracle_sizes_file) if p.is_file()]
        return sorted(set(self.required_files() + sizes))
