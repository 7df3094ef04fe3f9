"""Catalogue of the published weights files MMAudio can use, with where they live and how to check them.

Sizes and SHA-256 sums are those the Hugging Face Hub publishes for each file (its LFS/Xet object id, shown on
the file's page); the MD5 sums are the ones the reference code checks (``mmaudio/utils/download_utils.py``).
Where the Hub shows only a rounded size, ``approx_size`` holds it and the check allows half a percent. One
file has no published checksum (Kijai's fp32 CLIP): its SHA-256 is recorded after download in a
``<file>.sha256`` sidecar and checked against that from then on.

Identification never uses this table: a file is recognised by its tensors. The table only serves downloads
and messages that say where a missing file comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .identify import KINDS

_MMAUDIO_LICENSE = "CC-BY-NC 4.0 (MMAudio weights; non-commercial use)"


@dataclass(frozen=True)
class KnownFile:
    """One published file: where to fetch it, where to put it, how to check it, and what it is."""

    id: str
    repo_id: str
    filename: str  # path inside the Hub repository
    local_path: str  # POSIX path inside a models/mmaudio folder
    kind: str  # one of identify.KINDS, or "config"
    variant: str | None = None
    mode: str | None = None
    storage: str = "fp32"
    source: str = ""  # who publishes this copy: "hkchengrex", "kijai", "nvidia", "apple"
    size: int | None = None
    approx_size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    revision: str = "main"
    license: str = ""
    companions: tuple[str, ...] = ()  # ids of files that must lie beside this one
    json_fields: Mapping[str, Any] = field(default_factory=dict)  # for small JSON files: required values

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/{self.filename}"

    @property
    def page_url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/{self.revision}/{self.filename}"

    @property
    def name(self) -> str:
        return self.local_path.rsplit("/", 1)[-1]

    @property
    def expected_bytes(self) -> int | None:
        return self.size if self.size is not None else self.approx_size

    def size_matches(self, actual: int, tolerance: float = 0.005) -> bool:
        """Exact when the size is published, within ``tolerance`` of a rounded published size otherwise."""
        if self.size is not None:
            return actual == self.size
        if self.approx_size is not None:
            return abs(actual - self.approx_size) <= tolerance * self.approx_size
        return actual > 0


def _hk(variant_or_id: str, filename: str, kind: str, *, size: int | None = None, approx_size: int | None = None,
        sha256: str, md5: str, variant: str | None = None, mode: str | None = None) -> KnownFile:
    return KnownFile(
        id=variant_or_id, repo_id="hkchengrex/MMAudio", filename=filename, local_path=filename.rsplit("/", 1)[-1],
        kind=kind, variant=variant, mode=mode, storage="fp32", source="hkchengrex", size=size,
        approx_size=approx_size, sha256=sha256, md5=md5, license=_MMAUDIO_LICENSE,
    )


def _kijai(name: str, kind: str, storage: str, approx_size: int, sha256: str | None, *,
           variant: str | None = None, mode: str | None = None) -> KnownFile:
    return KnownFile(
        id=name, repo_id="Kijai/MMAudio_safetensors", filename=name, local_path=name, kind=kind, variant=variant,
        mode=mode, storage=storage, source="kijai", approx_size=approx_size, sha256=sha256,
        license="as the original weights (conversion of hkchengrex/MMAudio and apple/DFN5B-CLIP-ViT-H-14-378)",
    )


_BIGVGAN_DIR = "nvidia/bigvgan_v2_44khz_128band_512x"
_CLIP_DIR = "apple/DFN5B-CLIP-ViT-H-14-378"

KNOWN_FILES: tuple[KnownFile, ...] = (
    # ---- original releases (hkchengrex/MMAudio on the Hub; ext_weights mirror the GitHub v0.1 release) ----
    _hk("mmaudio_small_16k.pth", "weights/mmaudio_small_16k.pth", "network", variant="small_16k", mode="16k",
        size=629395261, sha256="61987bcbd6fc689af063075d7efaef29425f65df155dac589c07fa8173a03c1c",
        md5="af93cde404179f58e3919ac085b8033b"),
    _hk("mmaudio_small_44k.pth", "weights/mmaudio_small_44k.pth", "network", variant="small_44k", mode="44k",
        approx_size=629_900_000, sha256="11fd92e860a58f0fac972706dd06034e49dceff2e1450bbde5703785c812b0f1",
        md5="babd74c884783d13701ea2820a5f5b6d"),
    _hk("mmaudio_medium_44k.pth", "weights/mmaudio_medium_44k.pth", "network", variant="medium_44k", mode="44k",
        size=2487535109, sha256="3c6b01b5767a92f71529474faffedca2309416ff822b57b0c8d18be218cfb41a",
        md5="5a56b6665e45a1e65ada534defa903d0"),
    _hk("mmaudio_large_44k.pth", "weights/mmaudio_large_44k.pth", "network", variant="large_44k", mode="44k",
        size=4120388840, sha256="b3094f49ec67847dc5cf989982033b674574fd35f313d2fe4e54de8998a576dd",
        md5="fed96c325a6785b85ce75ae1aafd2673"),
    _hk("mmaudio_large_44k_v2.pth", "weights/mmaudio_large_44k_v2.pth", "network", variant="large_44k_v2",
        mode="44k", size=4122474715, sha256="a6bf693424fbd4ce0244fff8c412347714d5ac586e28dbeffadfa0f2b647af74",
        md5="01ad4464f049b2d7efdaa4c1a59b8dfe"),
    _hk("v1-16.pth", "ext_weights/v1-16.pth", "vae", variant="v1-16", mode="16k", size=686652758,
        sha256="15ad082c714ccf3771898a771fc6eebdc1d9c8d5c6154726906a97f43603d62c",
        md5="69f56803f59a549a1a507c93859fd4d7"),
    _hk("v1-44.pth", "ext_weights/v1-44.pth", "vae", variant="v1-44", mode="44k", size=1221942998,
        sha256="ab6cc15dc31947675f75c950c41f4dcfd0d6d1817555ac871f809ec388e4651a",
        md5="fab020275fa44c6589820ce025191600"),
    _hk("best_netG.pt", "ext_weights/best_netG.pt", "vocoder", variant="bigvgan_v1_16k", mode="16k",
        size=449217313, sha256="970ca75ee4d5ce583e9396a4534acb14971ea2b4f1c22e038f476680c868a789",
        md5="eeaf372a38a9c31c362120aba2dde292"),
    _hk("synchformer_state_dict.pth", "ext_weights/synchformer_state_dict.pth", "synchformer",
        variant="motionformer_224_16x4", size=950058171,
        sha256="8aff082f2df5c3bc52759db0c865c7ee772ae6400b860d1b7e90413f2defb67c",
        md5="5b2f5594b0730f70e41e549b7c94390c"),
    # ---- Kijai's safetensors conversions (same key names as the originals) ----
    _kijai("mmaudio_large_44k_v2_fp16.safetensors", "network", "fp16", 2_061_200_000,
           "a61378951ba4e8bfde2e977c0ad8211a7e02e1e92fd6a5b1c258a6464c1d102f", variant="large_44k_v2", mode="44k"),
    _kijai("mmaudio_large_44k_v2_fp32.safetensors", "network", "fp32", 4_122_400_000,
           "64ebb8a65be17df9f8ac029453b74ece02753871f708439926251cc5e0c80dea", variant="large_44k_v2", mode="44k"),
    _kijai("mmaudio_vae_44k_fp16.safetensors", "vae", "fp16", 611_000_000,
           "2598189f081bd10c86975106e5b6e2490168667429a75b52d77671283f245649", variant="v1-44", mode="44k"),
    _kijai("mmaudio_vae_44k_fp32.safetensors", "vae", "fp32", 1_221_950_000,
           "2ceae39bd927ea945c20f2aad82c2244a446997d7b287186849caca434abf78d", variant="v1-44", mode="44k"),
    _kijai("mmaudio_synchformer_fp16.safetensors", "synchformer", "fp16", 475_000_000,
           "b8d05128c76da6ee88720a89d25a5f86c603589883d02b53f563c3c66afe3581", variant="motionformer_224_16x4"),
    _kijai("mmaudio_synchformer_fp32.safetensors", "synchformer", "fp32", 950_000_000,
           "1a980cb446f8beec289e57f7b33649454eb87bac3276ae43b33927f1eeee717a", variant="motionformer_224_16x4"),
    _kijai("apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors", "clip", "fp16", 1_973_500_000,
           "d8ad903a79adc2b29bacfeedabfa3d78b03d36d3b4dcb885c0649fe8c5d763cb", variant="dfn5b_vit_h_14_378"),
    _kijai("apple_DFN5B-CLIP-ViT-H-14-384_fp32.safetensors", "clip", "fp32", 3_947_000_000, None,
           variant="dfn5b_vit_h_14_378"),
    # ---- BigVGAN v2 44.1 kHz from NVIDIA (Kijai's pack keeps it in the same sub-folder) ----
    KnownFile(
        id="bigvgan_generator.pt", repo_id="nvidia/bigvgan_v2_44khz_128band_512x", filename="bigvgan_generator.pt",
        local_path=f"{_BIGVGAN_DIR}/bigvgan_generator.pt", kind="vocoder", variant="bigvgan_v2_44k", mode="44k",
        source="nvidia", approx_size=488_900_000,
        sha256="d9fe7ec6bd0b44ed9d66973d5012d8181c1570b01e5c72df51973e241dccd357", license="MIT",
        companions=("bigvgan_v2_config.json",),
    ),
    KnownFile(
        id="bigvgan_v2_config.json", repo_id="nvidia/bigvgan_v2_44khz_128band_512x", filename="config.json",
        local_path=f"{_BIGVGAN_DIR}/config.json", kind="config", variant="bigvgan_v2_44k", mode="44k",
        source="nvidia", license="MIT",
        json_fields={"num_mels": 128, "sampling_rate": 44100, "upsample_rates": [8, 4, 2, 2, 2, 2],
                     "upsample_initial_channel": 1536, "use_bias_at_final": False},
    ),
    # ---- DFN5B CLIP in open_clip format (the reference's "hf-hub:apple/DFN5B-CLIP-ViT-H-14-384") ----
    KnownFile(
        id="open_clip_pytorch_model.bin", repo_id="apple/DFN5B-CLIP-ViT-H-14-378",
        filename="open_clip_pytorch_model.bin", local_path=f"{_CLIP_DIR}/open_clip_pytorch_model.bin", kind="clip",
        variant="dfn5b_vit_h_14_378", source="apple", size=3947081637,
        sha256="c07a17b547d461c60a3cce5062b26bf8545b13de602c4c59d8490361eb716033",
        license="Apple Sample Code License / apple-amlr (see the model card)",
    ),
)

_BY_ID = {f.id: f for f in KNOWN_FILES}

# The other components each network variant needs: mode -> kind -> file ids (preferred first).
_COMPANIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "16k": {"vae": ("v1-16.pth",), "vocoder": ("best_netG.pt",)},
    "44k": {"vae": ("mmaudio_vae_44k_fp16.safetensors", "v1-44.pth", "mmaudio_vae_44k_fp32.safetensors"),
            "vocoder": ("bigvgan_generator.pt",)},
}
_SHARED = {
    "synchformer": ("mmaudio_synchformer_fp16.safetensors", "synchformer_state_dict.pth",
                    "mmaudio_synchformer_fp32.safetensors"),
    "clip": ("apple_DFN5B-CLIP-ViT-H-14-384_fp16.safetensors", "open_clip_pytorch_model.bin",
             "apple_DFN5B-CLIP-ViT-H-14-384_fp32.safetensors"),
}


def known_file(file_id: str) -> KnownFile:
    """The catalogue entry with id (or local file name) ``file_id``."""
    if file_id in _BY_ID:
        return _BY_ID[file_id]
    for entry in KNOWN_FILES:
        if entry.local_path == file_id or entry.name == file_id:
            return entry
    raise ValueError(f"No published file named {file_id!r}; known: {', '.join(sorted(_BY_ID))}")


def known_files(kind: str | None = None, *, variant: str | None = None, mode: str | None = None,
                source: str | None = None) -> list[KnownFile]:
    """Catalogue entries filtered by kind, variant, mode and publisher (``None`` matches all)."""
    if kind is not None and kind not in (*KINDS, "config"):
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or 'config', got {kind!r}")
    return [
        f for f in KNOWN_FILES
        if (kind is None or f.kind == kind) and (variant is None or f.variant == variant)
        and (mode is None or f.mode == mode) and (source is None or f.source == source)
    ]


def files_for_variant(variant: str, *, prefer: str = "fp16") -> dict[str, KnownFile]:
    """One published file per component for network ``variant``: kind -> file.

    ``prefer="fp16"`` picks Kijai's half-size safetensors where they exist, ``"original"`` the original
    ``.pth`` releases, ``"fp32"`` Kijai's fp32 safetensors where they exist.
    """
    networks = known_files("network", variant=variant)
    if not networks:
        names = sorted({f.variant for f in known_files("network") if f.variant})
        raise ValueError(f"Unknown network variant {variant!r}; published: {', '.join(names)}")
    if prefer not in ("fp16", "fp32", "original"):
        raise ValueError(f"prefer must be 'fp16', 'fp32' or 'original', got {prefer!r}")
    mode = networks[0].mode
    assert mode is not None

    def pick(candidates: list[KnownFile]) -> KnownFile:
        def rank(f: KnownFile) -> int:
            if prefer == "original":
                return 0 if f.source != "kijai" else 1
            return 0 if (f.source == "kijai" and f.storage == prefer) else (1 if f.source != "kijai" else 2)
        return sorted(candidates, key=rank)[0]

    chosen = {"network": pick(networks)}
    for kind, ids in {**_COMPANIONS[mode], **_SHARED}.items():
        chosen[kind] = pick([_BY_ID[i] for i in ids])
    return chosen
