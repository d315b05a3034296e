"""What a test's headless Chromium needs to reach a stack over TLS."""

from __future__ import annotations

import os
from pathlib import Path

from svc_runtime import tls


def trust_args(cert: Path | None = None) -> list[str]:
    """Chromium flags that accept exactly the stack's server certificate (by the hash of its
    public key) and nothing else unverified; `cert` defaults to the test session's."""
    cert = cert or Path(os.environ[tls.CERT_FILE])
    return [f"--ignore-certificate-errors-spki-list={tls.spki_sha256(cert)}"]
