"""encryption: the random 32-byte key behind the secrets EncryptionConfiguration, made once.

The key stays in the state folder's pki/ (0600); the control-plane stage places the config.
"""

from __future__ import annotations

from khwtui.artifacts.encryption import KEY_FILE, encryption_config, load_or_create_key
from khwtui.core.errors import StateError
from khwtui.core.outcome import Outcome
from khwtui.stages.base import Stage
from khwtui.toolkit.run_context import RunContext


class EncryptionStage(Stage):

    async def check(self, run: RunContext) -> list[Outcome]:
        path = run.cluster.state_dir.pki_dir / KEY_FILE
        if not path.is_file():
            return [Outcome.failed("encryption key", evidence=f"{path} does not exist yet")]
        try:
            encryption_config(run.config.encryption.provider, load_or_create_key(path.parent))
        except StateError as exc:
            return [Outcome.failed("encryption key", evidence=str(exc))]
        if path.stat().st_mode & 0o777 != 0o600:
            return [Outcome.failed("encryption key", evidence=f"{path} is not 0600")]
        return [Outcome.passed("encryption key", evidence=f"{run.config.encryption.provider}, key1")]

    async def apply(self, run: RunContext) -> None:
        run.cluster.state_dir.ensure_layout()
        load_or_create_key(run.cluster.state_dir.pki_dir)
        run.log("", f"encryption key ready ({run.config.encryption.provider})")


STAGE = EncryptionStage
