"""What Google serves that no test creates: regions and zones, machine types, image families."""

from __future__ import annotations

import zlib

BASE = "https://www.googleapis.com/compute/v1/"

ZONES: dict[str, tuple[str, ...]] = {
    "us-west1": ("us-west1-a", "us-west1-b", "us-west1-c"),
    "us-central1": ("us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"),
    "us-east1": ("us-east1-b", "us-east1-c", "us-east1-d"),
    "europe-west1": ("europe-west1-b", "europe-west1-c", "europe-west1-d"),
    "asia-east1": ("asia-east1-a", "asia-east1-b", "asia-east1-c"),
}

# name -> (vCPUs, memory MiB)
MACHINE_TYPES: dict[str, tuple[int, int]] = {
    "e2-micro": (2, 1024),
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "e2-standard-8": (8, 32768),
    "n1-standard-1": (1, 3840),
    "n1-standard-2": (2, 7680),
    "n2-standard-2": (2, 8192),
}

# (image project, family) -> newest image name in the family
IMAGE_FAMILIES: dict[tuple[str, str], str] = {
    ("debian-cloud", "debian-12"): "debian-12-bookworm-v20260114",
    ("debian-cloud", "debian-13"): "debian-13-trixie-v20260114",
    ("ubuntu-os-cloud", "ubuntu-2204-lts"): "ubuntu-2204-jammy-v20260115",
    ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"): "ubuntu-2404-noble-amd64-v20260115",
}
IMAGE_DISK_GB = 10
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd")

# Quota metrics as regions.get and projects.get list them
# (https://cloud.google.com/compute/docs/reference/rest/v1/regions, .../v1/projects: quotas[].metric;
# https://cloud.google.com/compute/resource-usage): CPUS_ALL_REGIONS is the project's, the rest a region's.
DEFAULT_QUOTAS: dict[str, float] = {
    "CPUS": 24.0,
    "INSTANCES": 24.0,
    "IN_USE_ADDRESSES": 8.0,
    "STATIC_ADDRESSES": 8.0,
    "DISKS_TOTAL_GB": 4096.0,  # pd-standard
    "SSD_TOTAL_GB": 2048.0,  # pd-ssd and pd-balanced
    "CPUS_ALL_REGIONS": 32.0,
}
PROJECT_METRICS = frozenset({"CPUS_ALL_REGIONS"})
SSD_DISK_TYPES = ("pd-balanced", "pd-ssd")


def region_of(zone: str) -> str:
    """The region a zone belongs to ("" for an unknown zone)."""
    region = zone.rsplit("-", 1)[0]
    return region if zone in ZONES.get(region, ()) else ""


def stable_id(text: str) -> str:
    """A numeric id that stays the same for the same catalog entry."""
    return str(zlib.crc32(text.encode()) + 10**18)


def image(project: str, name: str) -> dict | None:
    """An image by project and name or `family/<family>`, as images.get(FromFamily) serves it."""
    families = {latest: family for (owner, family), latest in IMAGE_FAMILIES.items() if owner == project}
    if name.startswith("family/"):
        wanted = name.removeprefix("family/")
        name = next((latest for latest, family in families.items() if family == wanted), "")
    if name not in families:
        return None
    path = f"projects/{project}/global/images/{name}"
    return {
        "kind": "compute#image",
        "id": stable_id(path),
        "name": name,
        "family": families[name],
        "selfLink": BASE + path,
        "status": "READY",
        "architecture": "X86_64",
        "diskSizeGb": str(IMAGE_DISK_GB),
    }


def machine_type(project: str, zone: str, name: str) -> dict | None:
    if name not in MACHINE_TYPES or not region_of(zone):
        return None
    cpus, memory = MACHINE_TYPES[name]
    path = f"projects/{project}/zones/{zone}/machineTypes/{name}"
    return {
        "kind": "compute#machineType",
        "id": stable_id(name),
        "name": name,
        "guestCpus": cpus,
        "memoryMb": memory,
        "zone": zone,
        "selfLink": BASE + path,
    }
