"""One table of GPU kinds: datasheet peak FLOP/s, memory, and the links of the node they usually sit in.

The doctor's memory check (`memory_gb`), the cost model (peak, links, HBM bandwidth) and the MFU logged while
training (`peak`) all read it, and one matcher (`gpu_kind`) turns a device name into its key. Pure data.

Peaks: dense (no sparsity) tensor-core FLOP/s from the vendors' datasheets. "tf32" is what fp32 training
reaches when matmuls may use TF32 (TorchEngine allows it on CUDA); "fp32" is the plain FP32 rate.
Keys match whole words of torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"),
first match wins, so variants come before the base name.

Links: intra = NVLink bandwidth per GPU and direction from the datasheet (all-reduce busbw on 8 GPUs of one node
reaches 80-100% of it in nccl-tests). inter: a rail-optimized fabric gives each GPU its own NIC and NCCL spreads
its rings over them, so a cross-node all-reduce's busbw is ~ NICs used x NIC rate x 0.9. H100 SXM NVLink 4
900 GB/s bidirectional (450 each way), A100 SXM NVLink 3 600 GB/s, V100 SXM2 300 GB/s; DGX H100/H200 have
8 ConnectX-7 400 Gb/s (NDR, 50 GB/s) for the compute fabric, DGX A100 8 x 200 Gb/s HDR (25 GB/s). PCIe cards:
PCIe Gen5 x16 ~ 64 GB/s, Gen4 ~ 32 GB/s each way (~50 / 25 achieved), and an assumed one 100 Gb/s NIC per node.
Replace the links with `gpt2dist bench-comm`'s measurement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class GpuKind:
    peak: dict[str, float]  # FLOP/s by precision: bf16, fp16, tf32, fp32 (absent: not supported)
    memory_gb: float  # per GPU, datasheet GB
    intra_busbw: float  # bytes/s
    nic_bw: float  # one NIC, bytes/s
    nics_per_node: int
    pcie_bw: float
    hbm_bw: float
    source: str  # the node the link figures describe

    @property
    def intra_link(self) -> str:
        """"pcie" where the GPUs of a node talk over PCIe (no faster link than the host's), else "nvlink"."""
        return "pcie" if self.intra_busbw <= self.pcie_bw else "nvlink"

    def inter_busbw(self, gpus_per_node: int) -> float:
        return min(gpus_per_node, self.nics_per_node) * self.nic_bw * 0.9


def _peak(bf16: float | None, tf32: float | None, fp32: float, fp16: float | None = None) -> dict[str, float]:
    table = {"bf16": bf16, "fp16": fp16 if fp16 is not None else bf16, "tf32": tf32, "fp32": fp32}
    return {k: v for k, v in table.items() if v is not None}


T = 1e12
GPUS: dict[str, GpuKind] = {
    "H200 NVL": GpuKind(_peak(835 * T, 418 * T, 60 * T), 141, 450 * GB, 50 * GB, 8, 50 * GB, 4800 * GB,
                 "H200 NVL: NVLink bridges of 2 or 4 cards (900 GB/s), 8 x NDR 400 Gb/s"),  # lower clocks
    "H200": GpuKind(_peak(989 * T, 494.7 * T, 66.9 * T), 141, 450 * GB, 50 * GB, 8, 50 * GB, 4800 * GB,
                 "HGX/DGX H200: NVLink 4, 8 x NDR 400 Gb/s"),  # SXM
    "H100 PCIe": GpuKind(_peak(756 * T, 378 * T, 51.2 * T), 80, 50 * GB, 12.5 * GB, 1, 50 * GB, 2000 * GB,
                 "H100 PCIe: PCIe Gen5, 1 x 100 Gb/s per node"),
    "H100 NVL": GpuKind(_peak(835 * T, 418 * T, 60 * T), 94, 300 * GB, 50 * GB, 8, 50 * GB, 3900 * GB,
                 "H100 NVL: NVLink bridge pairs, 8 x NDR 400 Gb/s"),
    "H100": GpuKind(_peak(989 * T, 494.7 * T, 66.9 * T), 80, 450 * GB, 50 * GB, 8, 50 * GB, 3350 * GB,
                 "HGX/DGX H100 SXM: NVLink 4, 8 x NDR 400 Gb/s"),  # SXM
    "A100": GpuKind(_peak(312 * T, 156 * T, 19.5 * T), 80, 300 * GB, 25 * GB, 8, 25 * GB, 2039 * GB,
                 "HGX/DGX A100 SXM: NVLink 3, 8 x HDR 200 Gb/s"),
    "A10": GpuKind(_peak(125 * T, 62.5 * T, 31.2 * T), 24, 25 * GB, 12.5 * GB, 1, 25 * GB, 600 * GB,
                 "A10: PCIe Gen4, 1 x 100 Gb/s per node"),
    "L40S": GpuKind(_peak(362 * T, 183 * T, 91.6 * T), 48, 25 * GB, 12.5 * GB, 1, 25 * GB, 864 * GB,
                 "L40S: PCIe Gen4, 1 x 100 Gb/s per node"),
    "L4": GpuKind(_peak(121 * T, 60 * T, 30.3 * T), 24, 25 * GB, 12.5 * GB, 1, 25 * GB, 300 * GB,
                 "L4: PCIe Gen4, 1 x 100 Gb/s per node"),
    "V100": GpuKind(_peak(None, None, 15.7 * T, fp16=125 * T), 32, 150 * GB, 12.5 * GB, 4, 16 * GB, 900 * GB,
                 "DGX-1/-2 V100 SXM2: NVLink 2, 4 x EDR 100 Gb/s"),  # no bf16, no TF32
    "RTX 4090": GpuKind(_peak(165.2 * T, 82.6 * T, 82.6 * T), 24, 25 * GB, 12.5 * GB, 1, 25 * GB, 1008 * GB,
                 "RTX 4090: PCIe Gen4, 1 x 100 Gb/s per node"),
    "MI300X": GpuKind(_peak(1307.4 * T, 653.7 * T, 163.4 * T), 192, 448 * GB, 50 * GB, 8, 50 * GB, 5300 * GB,
                 "MI300X platform: Infinity Fabric, 8 x 400 Gb/s"),
}


def gpu_kind(name: str | None) -> str | None:
    """The GPUS key a device name matches (whole words, case-insensitive, first match: 'H100 PCIe' before
    'H100'), or None."""
    for key in GPUS:
        if name and re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", name, flags=re.IGNORECASE):
            return key
    return None
