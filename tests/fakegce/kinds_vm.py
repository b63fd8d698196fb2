"""Instances: their boot disk, interfaces, metadata (with fingerprints) and host keys."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from . import catalog
from .errors import ApiError, OpError, fingerprint_mismatch, invalid, not_found, required
from .kinds_net import internal_ip, reserved_address, same_region
from .model import Change, Prepared, Record, View
from .paths import Scope, parse_ref, url
from .rules import check_labels, check_name, fingerprint, integer, metadata_items, need
from .specs import new_record


def instance(view: View, scope: Scope, body: dict) -> Prepared:
    """Validate an instance insert; the backing brings the machine up while the op runs."""
    machine_type, cpus = _machine_type(view, scope, need(body, "machineType"))
    attached, disk = _boot_disk(view, scope, body)
    nics, uses = _interfaces(view, scope, need(body, "networkInterfaces"))
    items = metadata_items((body.get("metadata") or {}).get("items"))
    tags = [
        check_name(tag, f"resource.tags.items[{i}]")
        for i, tag in enumerate((body.get("tags") or {}).get("items") or [])
    ]
    labels = check_labels(body.get("labels"))
    served = {
        "machineType": machine_type,
        "status": "RUNNING",
        "canIpForward": bool(body.get("canIpForward", False)),
        "disks": [attached],
        "networkInterfaces": nics,
        "metadata": {"kind": "compute#metadata", "items": items, "fingerprint": fingerprint(items)},
        "tags": {"items": tags, "fingerprint": fingerprint(tags)},
        "labels": labels,
        "labelFingerprint": fingerprint(labels),
    }
    disk_quota = "SSD_TOTAL_GB" if disk.body["type"].rsplit("/", 1)[1] in catalog.SSD_DISK_TYPES else "DISKS_TOTAL_GB"
    quota = {
        "CPUS": float(cpus),
        "CPUS_ALL_REGIONS": float(cpus),
        "INSTANCES": 1.0,
        "IN_USE_ADDRESSES": float(sum(len(n.get("accessConfigs", ())) for n in nics)),
        disk_quota: float(disk.body["sizeGb"]),
    }
    record = new_record(
        view,
        scope,
        "instances",
        body,
        served,
        uses=(*uses, disk.path),
        quota=quota,
        takes_down=(disk.path,) if attached["autoDelete"] else (),
    )
    publishes = any(i["key"] == "enable-guest-attributes" and i["value"].upper() == "TRUE" for i in items)
    work = partial(view.backing.create, record.name, nics[0]["networkIP"])
    return Prepared(record, parts=[disk], work=work, finish=partial(_boot, publishes))


def set_metadata(view: View, record: Record, body: dict) -> Change:
    """instances.setMetadata: the caller must send the current fingerprint, now and at DONE."""
    expected = record.body["metadata"]["fingerprint"]
    if body.get("fingerprint") != expected:
        raise fingerprint_mismatch()
    items = metadata_items(body.get("items"), "metadata.items")
    return partial(_replace_metadata, expected, items)


def teardown(view: View, record: Record) -> Callable[[], None]:
    return partial(view.backing.delete, record.name)


def _boot(publishes: bool, record: Record, outcome: object) -> None:
    """Apply what the backing reported: the address becomes natIP, the keys guest attributes."""
    address, host_keys = outcome  # type: ignore[misc]
    configs = record.body["networkInterfaces"][0].get("accessConfigs")
    if configs:
        configs[0].setdefault("natIP", address)
    record.host_keys = dict(host_keys) if publishes else None


def _replace_metadata(expected: str, items: list[dict], record: Record) -> OpError | None:
    metadata = record.body["metadata"]
    if metadata["fingerprint"] != expected:
        return OpError("CONDITION_NOT_MET", "Supplied fingerprint does not match current metadata fingerprint.", 412)
    record.body["metadata"] = {**metadata, "items": items, "fingerprint": fingerprint(expected, items)}
    return None


def _machine_type(view: View, scope: Scope, value: object) -> tuple[str, int]:
    ref = parse_ref("resource.machineType", value, view.project, "machineTypes")
    if ref.project != view.project or ref.scope != scope or ref.name not in catalog.MACHINE_TYPES:
        why = f"Machine type with name '{ref.name}' does not exist in zone '{scope.name}'."
        raise invalid("resource.machineType", value, why)
    return url(ref.path), catalog.MACHINE_TYPES[ref.name][0]


def _boot_disk(view: View, scope: Scope, body: dict) -> tuple[dict, Record]:
    """The attached boot disk as served, and the disk record it creates."""
    disks = need(body, "disks")
    if len(disks) != 1 or not disks[0].get("boot"):  # type: ignore[arg-type]
        raise ApiError(400, "fakegce models exactly one disk per instance, the boot disk (boot: true).")
    disk = disks[0]  # type: ignore[index]
    if disk.get("type", "PERSISTENT") != "PERSISTENT":
        raise invalid("resource.disks[0].type", disk["type"], "The boot disk must be PERSISTENT.")
    params = need(disk, "initializeParams", "resource.disks[0]")
    field = "resource.disks[0].initializeParams"
    image = _image(view, params.get("sourceImage"), f"{field}.sourceImage")
    size = integer(f"{field}.diskSizeGb", params.get("diskSizeGb", catalog.IMAGE_DISK_GB), catalog.IMAGE_DISK_GB, 65536)
    name = check_name(params.get("diskName") or body["name"], f"{field}.diskName")
    served = {
        "sizeGb": str(size),
        "sourceImage": image["selfLink"],
        "type": _disk_type(view, scope, params.get("diskType"), f"{field}.diskType"),
        "status": "READY",
        "labels": check_labels(params.get("labels"), f"{field}.labels"),
    }
    record = new_record(view, scope, "disks", {"name": name}, served)
    attached = {
        "kind": "compute#attachedDisk",
        "type": "PERSISTENT",
        "mode": "READ_WRITE",
        "source": url(record.path),
        "deviceName": disk.get("deviceName") or name,
        "index": 0,
        "boot": True,
        "autoDelete": bool(disk.get("autoDelete", False)),  # the API's default, unlike gcloud's
        "diskSizeGb": str(size),
        "interface": "SCSI",
    }
    return attached, record


def _image(view: View, value: object, field: str) -> dict:
    if not value:
        raise required(field)
    ref = parse_ref(field, value, view.project, "images")
    image = catalog.image(ref.project, ref.name) if ref.scope == Scope("global") else None
    if image is None:
        raise not_found(ref.path)
    return image


def _disk_type(view: View, scope: Scope, value: object, field: str) -> str:
    ref = parse_ref(field, value or f"{scope.path}/diskTypes/pd-standard", view.project, "diskTypes")
    if ref.scope != scope or ref.name not in catalog.DISK_TYPES:
        raise invalid(field, value, f"Disk type must be one of {', '.join(catalog.DISK_TYPES)} in zone '{scope.name}'.")
    return url(ref.path)


def _interfaces(view: View, scope: Scope, nics: object) -> tuple[list[dict], list[str]]:
    """Served network interfaces and the paths they use (subnetworks, static addresses)."""
    served: list[dict] = []
    uses: list[str] = []
    for i, nic in enumerate(nics):  # type: ignore[arg-type]
        field = f"resource.networkInterfaces[{i}]"
        subnet = view.use(f"{field}.subnetwork", nic.get("subnetwork"), "subnetworks")
        same_region(subnet, scope, f"{field}.subnetwork")
        if (
            nic.get("network")
            and url(parse_ref(f"{field}.network", nic["network"], view.project, "networks").path)
            != subnet.body["network"]
        ):
            raise invalid(f"{field}.network", nic["network"], "The subnetwork belongs to another network.")
        if any(other["network"] == subnet.body["network"] for other in served):
            raise invalid(f"{field}.subnetwork", nic["subnetwork"], "Each interface must be on a different network.")
        configs, static = _access_configs(view, scope, f"{field}.accessConfigs", nic.get("accessConfigs") or [])
        served.append(
            {
                "kind": "compute#networkInterface",
                "name": f"nic{i}",
                "network": subnet.body["network"],
                "subnetwork": url(subnet.path),
                "networkIP": internal_ip(view, subnet, nic.get("networkIP"), f"{field}.networkIP"),
                **({"accessConfigs": configs} if configs else {}),
            }
        )
        uses += [subnet.path, *static]
    return served, uses


def _access_configs(view: View, scope: Scope, field: str, configs: list[dict]) -> tuple[list[dict], list[str]]:
    """External NAT configs (at most one); a given natIP must be a free reserved address."""
    if len(configs) > 1:
        raise invalid(field, len(configs), "At most one access config per interface.")
    served, static = [], []
    for config in configs:
        if config.get("type", "ONE_TO_ONE_NAT") != "ONE_TO_ONE_NAT":
            raise invalid(f"{field}[0].type", config["type"], "Must be ONE_TO_ONE_NAT.")
        entry = {
            "kind": "compute#accessConfig",
            "type": "ONE_TO_ONE_NAT",
            "name": config.get("name", "External NAT"),
            "networkTier": "PREMIUM",
        }
        if config.get("natIP"):
            address = reserved_address(view, scope, f"{field}[0].natIP", config["natIP"], shared_with="")
            entry["natIP"] = address.body["address"]
            static.append(address.path)
        served.append(entry)
    return served, static
