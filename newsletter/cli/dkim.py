"""``newsletter dkim keygen``: a signing key, written private (0600), and the DNS record that
publishes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import _settings, dkim_app, readable_errors
from newsletter.edition import dkim


@dkim_app.command("keygen")
@readable_errors
def dkim_keygen(
    selector: Annotated[
        str, typer.Option(help="The selector: the record's name is <selector>._domainkey.<domain>.")
    ],
    key_type: Annotated[
        str, typer.Option("--type", help="rsa (RSA-2048, read everywhere) or ed25519 (RFC 8463).")
    ] = "rsa",
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the private key (default: dkim-<selector>.pem)."),
    ] = None,
    domain: Annotated[
        str,
        typer.Option(
            help="The signing domain (default: NEWSLETTER_DKIM_DOMAIN, else the From domain)."
        ),
    ] = "",
) -> None:
    """Write a new private key (readable by its owner only; an existing file is never
    overwritten) and print the TXT record to publish and the NEWSLETTER_DKIM_KEYS entry."""
    if not dkim.SELECTOR.fullmatch(selector):
        raise dkim.DkimError(
            f"--selector: {selector!r} is not letters, digits, dots and hyphens (at most 63)"
        )
    settings = _settings()
    signing_domain = domain or settings.dkim_domain or settings.sender().domain
    pem, record = dkim.generate(key_type)
    path = out or Path(f"dkim-{selector}.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise dkim.DkimError(f"--out: {path} exists; it is never overwritten") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    typer.echo(f"wrote {path} (mode 0600, {key_type})")
    typer.echo(f"publish this TXT record at {selector}._domainkey.{signing_domain}:")
    typer.echo(f"  {record}")
    typer.echo(f"then set NEWSLETTER_DKIM_KEYS={selector}:{path.resolve()}")
