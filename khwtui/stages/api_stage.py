"""The base of the stages that work through the Kubernetes API (dns, smoke, demo)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from khwtui.stages.base import Stage
from khwtui.toolkit.manifests import cluster_api
from khwtui.transport.kubeapi import ApiClient

if TYPE_CHECKING:
    from khwtui.toolkit.run_context import RunContext


class ApiStage(Stage):
    """A stage that works through the Kubernetes API. Tests hand it an ApiClient for a server that
    answers with built documents; a real run builds one for the cluster on first use."""

    def __init__(self, api: ApiClient | None = None) -> None:
        self._api = api

    def api(self, run: RunContext) -> ApiClient:
        if self._api is None:
            self._api = cluster_api(run)
        return self._api
