"""Resolve the GCP project, region and zone the way a gcloud user expects.

Order: the config file, then the environment (CLOUDSDK_* and GOOGLE_CLOUD_PROJECT), then the
active gcloud configuration, then KTHW's us-west1 / us-west1-c. Nothing here calls the network.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from khwtui.model.config import Config

DEFAULT_REGION = "us-west1"
DEFAULT_ZONE = "us-west1-c"


@dataclass(frozen=True)
class GcpSettings:
    project: str
    region: str
    zone: str
    sources: dict[str, str]  # "gcp.project" -> where the value came from


def gcloud_config_dir(env: Mapping[str, str]) -> Path:
    return Path(env["CLOUDSDK_CONFIG"]) if env.get("CLOUDSDK_CONFIG") else Path.home() / ".config" / "gcloud"


def _gcloud_properties(env: Mapping[str, str]) -> configparser.ConfigParser:
    """The active gcloud configuration's INI file (empty when gcloud was never set up)."""
    directory = gcloud_config_dir(env)
    name = env.get("CLOUDSDK_ACTIVE_CONFIG_NAME")
    if not name:
        active = directory / "active_config"
        name = active.read_text().strip() if active.is_file() else "default"
    parser = configparser.ConfigParser()
    parser.read(directory / "configurations" / f"config_{name}")
    return parser


def resolve(config: Config, env: Mapping[str, str] | None = None) -> GcpSettings:
    env = os.environ if env is None else env
    ini = _gcloud_properties(env)
    lookups = {
        "project": (config.gcp.project, ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT"), ("core", "project"), ""),
        "region": (config.gcp.region, ("CLOUDSDK_COMPUTE_REGION",), ("compute", "region"), DEFAULT_REGION),
        "zone": (config.gcp.zone, ("CLOUDSDK_COMPUTE_ZONE",), ("compute", "zone"), DEFAULT_ZONE),
    }
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, (configured, env_names, (section, option), default) in lookups.items():
        value, source = _first(configured, config.path, env, env_names, ini, section, option, default)
        values[key], sources[f"gcp.{key}"] = value, source
    if sources["gcp.zone"] == "default" and sources["gcp.region"] != "default":
        values["zone"], sources["gcp.zone"] = f"{values['region']}-c", "derived from gcp.region"
    return GcpSettings(values["project"], values["region"], values["zone"], sources)


def _first(
    configured: str,
    config_path: str,
    env: Mapping[str, str],
    env_names: tuple[str, ...],
    ini: configparser.ConfigParser,
    section: str,
    option: str,
    default: str,
) -> tuple[str, str]:
    if configured:
        return configured, config_path
    for name in env_names:
        if env.get(name):
            return env[name], f"environment {name}"
    if ini.has_option(section, option):
        return ini.get(section, option), f"gcloud config {section}/{option}"
    return default, "default" if default else "unset"
