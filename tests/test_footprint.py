"""What every command process loads. Each module imported at start is resident in the command
and in every forked sender process (README, Performance: the modules are most of a send's
peak memory), so the libraries only some paths need are imported on those paths."""

from __future__ import annotations

import json
import subprocess
import sys

#: Loaded only where used: migrations (Alembic), DKIM keys and webhook signatures
#: (cryptography), console passwords (argon2), the email APIs (requests), the progress bar
#: (rich), the bounce listener (aiosmtpd).
ON_DEMAND = ("alembic", "cryptography", "argon2", "requests", "rich", "aiosmtpd")


def test_the_command_loads_no_library_that_only_some_paths_need() -> None:
    code = "import json, sys, newsletter.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = {name.partition(".")[0] for name in json.loads(out)}
    assert "newsletter" in loaded and "sqlalchemy" in loaded
    assert sorted(loaded.intersection(ON_DEMAND)) == []
