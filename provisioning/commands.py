"""What the ``edgefleet ca`` and ``edgefleet release`` subcommands do, behind the CLI's thin
handlers: argument values in, files written, one line of output per result (no key material)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from provisioning.broker import BrokerSettings, write_config
from provisioning.ca import CAError, FleetCA

__all__ = ["ca_command", "flash_command", "release_command"]


def ca_command(command: str, directory: Path, args: argparse.Namespace) -> int:
    if command == "init":
        ca = FleetCA.init(directory)
        print(f"CA {ca.cert.subject.rfc4514_string()} in {directory}")
        return 0
    ca = FleetCA(directory)
    if command == "issue":
        row = ca.issue(args.identity, args.role, hosts=tuple(args.host))
        cert, key = ca.path(row)
        print(f"{row.role} {row.identity} serial {row.serial:x}: {cert} {key}")
    elif command == "revoke":
        for row in ca.revoke(args.identity):
            print(f"revoked {row.role} {row.identity} serial {row.serial:x}; CRL {ca.crl_file}")
    elif command == "crl":
        ca.write_crl(dt.timedelta(days=args.days))
        print(f"CRL {ca.crl_file} valid until {ca.crl_next_update()}; restart the broker")
    elif command == "list":
        print(f"CRL valid until {ca.crl_next_update()} (renew with `edgefleet ca crl`)")
        for row in ca.index():
            state = f"revoked {row.revoked_at}" if row.revoked_at else f"until {row.not_after}"
            print(f"{row.serial:40x}  {row.role:8} {row.identity:24} {state}")
    elif command == "broker-config":
        servers = [r for r in ca.live("server") if r.identity == args.server]
        if not servers:
            raise CAError(f"no live server certificate {args.server!r}: "
                          f"edgefleet ca issue {directory} {args.server} --role server --host ...")
        cert, key = ca.path(servers[-1])
        out = Path(args.out).resolve()
        settings = BrokerSettings(ca_file=ca.ca_file.resolve(), cert_file=cert.resolve(),
                                  key_file=key.resolve(), crl_file=ca.crl_file.resolve(),
                                  acl_file=out / "acl", persistence_dir=out / "data",
                                  port=args.port, bind=args.bind)
        write_config(settings, out / "mosquitto.conf", ca.identities("gateway"),
                     ca.identities("fleet"))
        print(f"wrote {out / 'mosquitto.conf'} and {out / 'acl'}")
    return 0


def release_command(command: str, args: argparse.Namespace) -> int:
    """``edgefleet release ...``; a refused release prints its reason and returns 1."""
    import json

    from contracts.release import ReleaseError, parse_version
    from provisioning import release as rel

    if command == "keygen":
        kid = rel.generate_key(Path(args.key))
        print(f"key {kid}: {args.key} (keep offline) and {Path(args.key).with_suffix('.pub')}")
    elif command == "keyset":
        ks = rel.make_keyset(args.version, [Path(p) for p in args.pub], args.revoke)
        Path(args.out).write_text(json.dumps(ks.to_json(), indent=1) + "\n")
        print(f"key set v{ks.version}: {', '.join(sorted(ks.keys))} -> {args.out}")
    elif command == "trust":
        ks = rel.load_keyset(Path(args.keyset))
        trust = rel.device_trust(ks, parse_version(args.floor))
        Path(args.out).write_text(json.dumps(trust) + "\n")
        print(f"device trust: key set v{ks.version}, floor {args.floor} -> {args.out}")
    elif command == "build":
        out = rel.build(Path(args.out), version=parse_version(args.version),
                        min_version=parse_version(args.min_version or args.version),
                        device_class=args.device_class, board=args.board)
        print(f"built {out} (unsigned): edgefleet release sign {out} KEY")
    elif command == "sign":
        keyset = rel.load_keyset(Path(args.keyset)) if args.keyset else None
        kid = rel.sign(Path(args.release), Path(args.key), keyset)
        print(f"signed {args.release} with key {kid}")
    elif command == "verify":
        try:
            m = rel.verify(Path(args.release), rel.load_trust(Path(args.trust)),
                           device_class=args.device_class, board=args.board)
        except ReleaseError as exc:
            print(f"REFUSED ({exc.code}) {exc}")
            return 1
        version = ".".join(map(str, m.version))
        print(f"OK {version} for {m.device_class}/{m.board}, {len(m.files)} files, "
              f"key {m.keyid}")
    return 0


def flash_command(args: argparse.Namespace) -> int:
    """``edgefleet flash``: plan, then write through mpremote with a progress bar per file."""
    import json

    from mpremote.transport_serial import SerialTransport
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from provisioning.flash import FlashError, NodeIdentity, plan, write

    def pairs(items: list[str], what: str) -> dict[str, str]:
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise FlashError(f"{what} {item!r} is not NAME=VALUE")
            out[key] = value
        return out

    identity = NodeIdentity(args.device_id, args.device_class, args.address, args.baud,
                            args.board, pairs(args.extra, "--extra"))
    thresholds = {k: float(v) for k, v in pairs(args.threshold, "--threshold").items()}
    trust = json.loads(Path(args.trust).read_text())
    files = plan(Path(args.release), identity, trust, thresholds=thresholds)
    total = sum(len(d) for d in files.values())
    transport = SerialTransport(args.port, baudrate=args.baudrate)
    try:
        # --resume: no soft reset (the unix port's REPL hangs on one, FIELD-NOTES)
        transport.enter_raw_repl(soft_reset=not args.resume)
        with Progress(TextColumn("{task.description:<28}"), BarColumn(), DownloadColumn(),
                      transient=False) as bars:
            tasks: dict[str, Any] = {}

            def progress(path: str, done: int, size: int) -> None:
                if path not in tasks:
                    tasks[path] = bars.add_task(path, total=max(size, 1))
                bars.update(tasks[path], completed=done if size else 1)

            write(transport, files, progress)
        transport.exit_raw_repl()
    finally:
        transport.close()
    print(f"flashed {args.device_id} ({args.device_class}, address {args.address}): "
          f"{len(files)} files, {total} bytes, read back and verified")
    return 0
