"""The ``edgefleet`` command: one entry point, a subcommand per part of the system."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("edgefleet")

_EPILOG = """\
examples:
  edgefleet sim bus --node 1:fire --node 2:flood
      run the real firmware for two nodes on one simulated RS-485 bus; the first line printed is
      the master-side pty, e.g. for: mbpoll -m rtu -b 19200 -P even -a 1 -t 3 -0 -r 0 -c 16 -1 PTY
  edgefleet sim bus --node 1:fire --scenario fire_growing
      the same, with a fire growing in the room of node 1
  edgefleet demo
      all four sensor classes on one bus with a live console view while a scenario plays
  edgefleet gateway check gateway/examples/site.toml
      validate a gateway configuration; errors name the file, line and field
  edgefleet hw gen
      regenerate firmware/app/hwdef.py and docs/registers.md after editing hardware/registers
"""


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _wait_for_interrupt() -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


# ----------------------------------------------------------------------------- sim
def _add_bus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", action="append", default=[], metavar="ADDR:CLASS",
                   help="a node on the bus: Modbus address 1-247 and class fire|flood|water|air "
                        "(repeat; the same address twice simulates a duplicate-address fault)")
    p.add_argument("--baud", type=int, default=19200,
                   help="bus speed for wire-time pacing and the nodes' t3.5 (default 19200)")
    p.add_argument("--no-pace", action="store_true",
                   help="deliver bytes as fast as the ptys allow instead of at wire speed")
    p.add_argument("--scenario", metavar="NAME|FILE",
                   help="scenario to play (a name from hardware/scenarios or a TOML file)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="simulated seconds per real second (default 1)")
    p.add_argument("--noise", type=float, default=0.0, metavar="RATE",
                   help="fault injection: probability per byte of a flipped bit")
    p.add_argument("--drop", type=float, default=0.0, metavar="RATE",
                   help="fault injection: probability per byte of a lost byte")
    p.add_argument("--dead", type=int, action="append", default=[], metavar="ADDR",
                   help="fault injection: this node's transceiver is dead (repeat)")
    p.add_argument("--heap", default=None, metavar="SIZE",
                   help="MicroPython heap per node, e.g. 64K (default: the port's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sensor noise and faults")


def _build_bus(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from hardware.sim.bushub import Faults
    from hardware.sim.simbus import SimBus, parse_node_spec

    try:
        nodes = [parse_node_spec(spec) for spec in args.node]
    except ValueError as exc:
        raise SystemExit(f"edgefleet sim bus: {exc}") from None
    if not nodes:
        raise SystemExit("edgefleet sim bus: give at least one --node ADDR:CLASS, "
                         "e.g. --node 1:fire")
    addresses = [a for a, _ in nodes]
    for address in sorted({a for a in addresses if addresses.count(a) > 1}):
        log.warning("address %d is used by more than one node: their replies will collide",
                    address)
    bus = SimBus(nodes, baud=args.baud, paced=not args.no_pace,
                 faults=Faults(bit_noise=args.noise, drop=args.drop, seed=args.seed),
                 heap=args.heap)
    for dead in args.dead:
        ports = [i + 1 for i, n in enumerate(bus.nodes) if n.address == dead]
        if not ports:
            raise SystemExit(f"edgefleet sim bus: --dead {dead}: no node has that address")
        bus.hub.faults.dead_ports.update(ports)
    return bus


def cmd_sim_bus(args: argparse.Namespace) -> int:
    from hardware.sim.simrun import attach_physics

    bus = _build_bus(args)
    try:
        attach_physics(bus, args.scenario, args.time_scale, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"edgefleet sim bus: {exc}") from None
    bus.start()
    try:
        print(bus.master_path, flush=True)
        log.warning("bus up at %d baud with %d node(s); master pty %s; Ctrl-C to stop",
                    args.baud, len(bus.nodes), bus.master_path)
        _wait_for_interrupt()
    finally:
        bus.stop()
    return 0


def cmd_sim_scenarios(args: argparse.Namespace) -> int:
    from hardware.sim.scenario import Scenario
    from hardware.sim.simrun import SCENARIOS_DIR

    for path in sorted(SCENARIOS_DIR.glob("*.toml")):
        sc = Scenario.load(path)
        print(f"{path.stem:28} {sc.title}")
    return 0


# ----------------------------------------------------------------------------- hw
def cmd_hw_gen(args: argparse.Namespace) -> int:
    from hardware.regmap import generated_files

    for path, text in generated_files().items():
        changed = not path.exists() or path.read_text() != text
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{'wrote' if changed else 'unchanged'} {path}")
    return 0


def cmd_hw_check(args: argparse.Namespace) -> int:
    from hardware.regmap import RegisterMapError, generated_files

    try:
        files = generated_files()
    except RegisterMapError as exc:
        print(f"register map error: {exc}", file=sys.stderr)
        return 1
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    for path in stale:
        print(f"stale: {path} (run `edgefleet hw gen`)", file=sys.stderr)
    if not stale:
        print("register maps valid; generated files fresh")
    return 1 if stale else 0


# ----------------------------------------------------------------------------- gateway
def cmd_gateway_check(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config, missing_files

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(*exc.issues, sep="\n", file=sys.stderr)
        return 1
    devices = sum(len(bus.device) for bus in config.bus)
    print(f"OK: {args.config}: gateway {config.gateway.id}: {len(config.bus)} bus(es), "
          f"{devices} device(s), {len(config.serial_input)} serial input(s), "
          f"{len(config.rule)} rule(s); broker {config.mqtt.host}:{config.mqtt.broker_port} "
          f"({'TLS' if config.mqtt.tls else 'no TLS'})")
    for warning in missing_files(config):
        print(f"warning: {args.config}: {warning} (needed on the gateway)", file=sys.stderr)
    return 0


def cmd_gateway_run(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.config import ConfigError, load_config
    from gateway.service import serve

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(*exc.issues, sep="\n", file=sys.stderr, flush=True)
        return 1
    asyncio.run(serve(config))
    return 0


# ----------------------------------------------------------------------------- ca
def cmd_ca(args: argparse.Namespace) -> int:
    from pathlib import Path

    from provisioning.ca import CAError
    from provisioning.commands import ca_command

    try:
        return ca_command(args.ca_command, Path(args.dir), args)
    except CAError as exc:
        raise SystemExit(f"edgefleet ca {args.ca_command}: {exc}") from None


def cmd_release(args: argparse.Namespace) -> int:
    from provisioning.commands import release_command

    return release_command(args.release_command, args)


def cmd_flash(args: argparse.Namespace) -> int:
    from contracts.release import ReleaseError
    from provisioning.commands import flash_command
    from provisioning.flash import FlashError

    try:
        return flash_command(args)
    except (FlashError, ReleaseError) as exc:
        raise SystemExit(f"edgefleet flash: {exc}") from None


# ----------------------------------------------------------------------------- fleet
def cmd_fleet_ingest(args: argparse.Namespace) -> int:
    from fleet.core.settings import ConfigError, load_settings
    from fleet.ingest.process import run_ingest

    try:
        settings = load_settings(Path(args.config))
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    return run_ingest(settings)


def _fleet_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from fleet.commands import ConfigError, cli_settings

    try:
        return cli_settings(args.config, args.data)
    except ConfigError as exc:
        raise SystemExit(f"edgefleet fleet: {exc}") from None


def cmd_fleet_serve(args: argparse.Namespace) -> int:
    from fleet.commands import ConfigError, serve

    try:
        serve(_fleet_settings(args), args.host, args.port)
    except ConfigError as exc:
        raise SystemExit(f"edgefleet fleet serve: {exc}") from None
    return 0


def cmd_fleet_migrate(args: argparse.Namespace) -> int:
    from fleet.commands import migrate

    migrate(_fleet_settings(args))
    print("fleet database is at the current schema")
    return 0


def cmd_fleet_create_admin(args: argparse.Namespace) -> int:
    from fleet.commands import ConfigError, create_admin
    from fleet.core.errors import FleetError

    try:
        password = create_admin(_fleet_settings(args), args.username)
    except (ConfigError, FleetError) as exc:
        raise SystemExit(f"edgefleet fleet create-admin: {exc}") from None
    print(f"admin account: {args.username}\none-time password: {password}\n"
          "(shown once; it must be changed at first login)")
    return 0


def cmd_fleet_broker_config(args: argparse.Namespace) -> int:
    from fleet.ingest.broker import BrokerConfig, Listener, mosquitto_conf

    include = Path(args.include_dir) if args.include_dir else None
    print(mosquitto_conf(BrokerConfig(persistence_location=Path(args.persistence),
                                      listeners=(Listener(args.port, args.host),),
                                      max_queued_bytes=args.max_queued_mib << 20,
                                      include_dir=include, run_as_root=False)), end="")
    return 0


def cmd_gateway_outbox(args: argparse.Namespace) -> int:
    from gateway import outbox_admin
    from gateway.config import ConfigError
    from gateway.outbox import OutboxError

    try:
        if args.outbox_command == "stats":
            lines = outbox_admin.stats(args.config)
        elif args.outbox_command == "dead":
            lines = outbox_admin.dead(args.config, args.limit)
        else:
            lines = outbox_admin.retry(args.config, args.ids)
    except ConfigError as exc:
        print("\n".join(str(i) for i in exc.issues), file=sys.stderr)
        return 1
    except (OSError, OutboxError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    if args.console:
        from edgefleet.demo import run_demo

        return run_demo(scenario=args.scenario or "city_block", duration=args.duration,
                        baud=args.baud)
    from edgefleet.stack import run_stack_demo

    return run_stack_demo(state=args.state, port=args.port, duration=args.duration,
                          baud=args.baud)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet",
        description="edgefleet keeps a city's safety sensors alive and honest: sensor firmware, "
                    "an RS-485 simulator, gateways and a fleet manager.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser("sim", help="the simulator: virtual sensors, real firmware, RS-485 bus",
                         description="Run real firmware nodes on a simulated RS-485 bus.",
                         epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)
    bus = sim_sub.add_parser(
        "bus", help="run nodes on one bus; prints the master pty path first",
        description="Start the real MicroPython firmware for each --node on one simulated "
                    "multi-drop RS-485 bus and print the master-side pty path as the first line "
                    "of standard output. A Modbus master (the gateway, mbpoll, minimalmodbus) "
                    "opens that path at 19200 8E1. Runs until interrupted.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_bus_options(bus)
    bus.set_defaults(func=cmd_sim_bus)
    scen = sim_sub.add_parser("scenarios", help="list the scenarios in hardware/scenarios")
    scen.set_defaults(func=cmd_sim_scenarios)

    gw = sub.add_parser(
        "gateway", help="the Raspberry Pi gateway: RS-485 Modbus to MQTT",
        description="Poll RS-485 buses, decode through the register maps, act on edge rules "
                    "and deliver telemetry, alarms and state to MQTT through a durable outbox.",
        epilog="examples:\n  edgefleet gateway check gateway/examples/site.toml\n"
               "  edgefleet gateway run /etc/edgefleet/gateway.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gw_sub = gw.add_subparsers(dest="gateway_command", metavar="GATEWAY_COMMAND", required=True)
    check = gw_sub.add_parser("check", help="validate a config file without running anything; "
                              "errors name the file, line and field")
    check.add_argument("config", help="gateway TOML file")
    check.set_defaults(func=cmd_gateway_check)
    run = gw_sub.add_parser("run", help="run the gateway until SIGINT/SIGTERM")
    run.add_argument("config", help="gateway TOML file")
    run.set_defaults(func=cmd_gateway_run)
    ob = gw_sub.add_parser("outbox", help="inspect the outbox; re-queue dead letters")
    ob_sub = ob.add_subparsers(dest="outbox_command", metavar="OUTBOX_COMMAND", required=True)
    for name, text in (("stats", "backlog, drops, dead letters, active alarms"),
                       ("dead", "the newest dead letters with their reason codes"),
                       ("retry", "move dead letters (all, or --id ...) back into the queue")):
        p = ob_sub.add_parser(name, help=text)
        p.add_argument("config", help="gateway TOML file")
        p.set_defaults(func=cmd_gateway_outbox)
        if name == "dead":
            p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
        if name == "retry":
            p.add_argument("--id", dest="ids", type=int, action="append",
                           help="a dead letter's id (repeatable); default: all")

    hw = sub.add_parser("hw", help="register maps: generate firmware constants and docs")
    hw_sub = hw.add_subparsers(dest="hw_command", metavar="HW_COMMAND", required=True)
    hw_sub.add_parser("gen", help="write firmware/app/hwdef.py and docs/registers.md"
                      ).set_defaults(func=cmd_hw_gen)
    hw_sub.add_parser("check", help="validate the maps; fail if generated files are stale"
                      ).set_defaults(func=cmd_hw_check)

    ca = sub.add_parser("ca", help="the fleet certificate authority: TLS identities, CRL, broker",
                        description="An EC P-256 CA for gateway, fleet-service and broker "
                                    "certificates (CN = identity), revocation with a CRL, and "
                                    "the Mosquitto configuration and ACL generated from it.")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="CA_COMMAND", required=True)
    for name, text in (("init", "make a new CA in DIR"),
                       ("issue", "issue a certificate: key and cert under DIR/issued/IDENTITY"),
                       ("revoke", "revoke every live certificate of IDENTITY; rewrite the CRL"),
                       ("list", "list issued certificates and the CRL's expiry"),
                       ("crl", "re-sign the CRL (before it expires, or every client is "
                               "refused)"),
                       ("broker-config", "write mosquitto.conf and its ACL into OUT")):
        p = ca_sub.add_parser(name, help=text)
        p.add_argument("dir", metavar="DIR", help="the CA directory")
        if name in ("issue", "revoke"):
            p.add_argument("identity", metavar="IDENTITY", help="the CN: gateway id or service")
        if name == "issue":
            p.add_argument("--role", choices=("gateway", "fleet", "server"), default="gateway")
            p.add_argument("--host", action="append", default=[],
                           help="DNS name or IP of a server certificate (repeat)")
        if name == "crl":
            p.add_argument("--days", type=int, default=365, help="validity (default 365)")
        if name == "broker-config":
            p.add_argument("out", metavar="OUT", help="directory for mosquitto.conf and acl")
            p.add_argument("--server", required=True, help="identity of the broker's server cert")
            p.add_argument("--port", type=int, default=8883)
            p.add_argument("--bind", default="0.0.0.0")
        p.set_defaults(func=cmd_ca)

    rel = sub.add_parser("release", help="signed firmware releases: keys, build, sign, verify",
                         description="Build a release from firmware/app (mpy-cross), sign its "
                                     "manifest with an offline Ed25519 key, verify it as a "
                                     "device would. See docs/provisioning.md.")
    rel_sub = rel.add_subparsers(dest="release_command", metavar="RELEASE_COMMAND", required=True)
    p = rel_sub.add_parser("keygen", help="new signing key KEY (0600) and KEY.pub")
    p.add_argument("key", metavar="KEY")
    p = rel_sub.add_parser("keyset", help="a key set file from public keys (for rotation)")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--pub", action="append", required=True, help="a .pub file (repeat)")
    p.add_argument("--revoke", action="append", default=[], metavar="KEYID")
    p = rel_sub.add_parser("trust", help="a device trust file: key set and anti-rollback floor")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--keyset", required=True)
    p.add_argument("--floor", default="0.0.0", metavar="X.Y.Z")
    p = rel_sub.add_parser("build", help="compile firmware/app into a new release directory")
    p.add_argument("out", metavar="DIR")
    p.add_argument("--version", required=True, metavar="X.Y.Z")
    p.add_argument("--min-version", metavar="X.Y.Z", help="anti-rollback floor (default: version)")
    p.add_argument("--class", dest="device_class", required=True,
                   choices=("fire", "flood", "water", "air"))
    p.add_argument("--board", default="esp32")
    p = rel_sub.add_parser("sign", help="sign a release's manifest with an offline key")
    p.add_argument("release", metavar="DIR")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--keyset", help="carry this key set (rotation) in the signed manifest")
    p = rel_sub.add_parser("verify", help="verify a release as a device would; exit 1 if refused")
    p.add_argument("release", metavar="DIR")
    p.add_argument("--trust", required=True, help="device trust file")
    p.add_argument("--class", dest="device_class")
    p.add_argument("--board")
    rel.set_defaults(func=cmd_release)

    fl = sub.add_parser("flash", help="put a signed release, identity and config on a board",
                        description="Verify RELEASE for this node, then write it with the "
                                    "node's identity, thresholds and release trust keys onto "
                                    "a MicroPython board through mpremote, and read every file "
                                    "back. The base MicroPython image is esptool's job.")
    fl.add_argument("port", metavar="PORT", help="serial port of the board, e.g. /dev/ttyUSB0")
    fl.add_argument("release", metavar="RELEASE", help="signed release directory")
    fl.add_argument("--trust", required=True, help="device trust file (edgefleet release trust)")
    fl.add_argument("--device-id", required=True)
    fl.add_argument("--class", dest="device_class", required=True,
                    choices=("fire", "flood", "water", "air"))
    fl.add_argument("--address", type=int, required=True, help="Modbus address 1-247")
    fl.add_argument("--baud", type=int, default=19200, help="RS-485 bus speed of the node")
    fl.add_argument("--board", default="esp32")
    fl.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                    help="a holding-register threshold in engineering units (repeat)")
    fl.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another node.json entry, e.g. uart=/dev/pts/7 on the unix port")
    fl.add_argument("--resume", action="store_true",
                    help="no soft reset before writing (needed for the MicroPython unix port)")
    fl.add_argument("--baudrate", type=int, default=115200, help="USB serial speed")
    fl.set_defaults(func=cmd_flash)
    fleet = sub.add_parser("fleet", help="the fleet manager: registry, ingest, alarms, API")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND",
                                     required=True)
    ingest = fleet_sub.add_parser(
        "ingest", help="run MQTT ingest alone (no API) until SIGINT/SIGTERM",
        description="Consume edgefleet/v1/# on the shared subscription named in the config's "
                    "[ingest] section and write telemetry, alarms and state durably before "
                    "acknowledging each message. Run several for more throughput.")
    ingest.add_argument("config", help="fleet TOML file")
    ingest.set_defaults(func=cmd_fleet_ingest)
    for name, func, help_ in (
            ("serve", cmd_fleet_serve, "run the fleet manager's API (uvicorn)"),
            ("migrate", cmd_fleet_migrate, "bring the fleet database to the current schema"),
            ("create-admin", cmd_fleet_create_admin,
             "make an admin account and print its one-time password")):
        p = fleet_sub.add_parser(name, help=help_, description=help_ + ". With no CONFIG: "
                                 "embedded defaults (SQLite under --data).")
        p.add_argument("config", nargs="?", metavar="CONFIG", help="fleet TOML file (optional)")
        p.add_argument("--data", metavar="DIR", help="data directory (default ./fleet-data)")
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8080)
        if name == "create-admin":
            p.add_argument("--username", default="admin")
        p.set_defaults(func=func)
    broker = fleet_sub.add_parser(
        "broker-config", help="print the mosquitto.conf that loss-proof ingest needs",
        description="Persistence, queue bounds and in-flight window for Mosquitto "
                    "(docs/fleet.md); TLS and ACLs come from provisioning via --include-dir.")
    broker.add_argument("--persistence", default="/var/lib/mosquitto")
    broker.add_argument("--host", default="127.0.0.1", help="plain listener address")
    broker.add_argument("--port", type=int, default=1883)
    broker.add_argument("--max-queued-mib", type=int, default=1024,
                        help="per-client queue bound in MiB, sized to the broker's RAM")
    broker.add_argument("--include-dir", default="", help="provisioning's TLS/ACL fragments")
    broker.set_defaults(func=cmd_fleet_broker_config)

    demo = sub.add_parser(
        "demo", help="the whole stack on one machine: buses, gateways, Mosquitto, fleet, dashboard",
        description="Start Mosquitto, the fleet (SQLite, embedded telemetry store) with a seeded "
                    "Ho Chi Minh City registry, two simulated RS-485 buses of real-firmware "
                    "nodes of all four classes and a gateway process for each, then play a day "
                    "(morning PM2.5 peak, storm flood, evening fire). Prints the dashboard URL "
                    "and a one-time admin login; Ctrl-C stops everything. --console: the older "
                    "single-bus console view, no fleet.")
    demo.add_argument("--console", action="store_true",
                      help="one bus, four nodes, a live console view (no gateway, no fleet)")
    demo.add_argument("--scenario", default=None,
                      help="scenario for --console (default city_block)")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: Ctrl-C; --console: when "
                           "the scenario ends)")
    demo.add_argument("--port", type=int, default=8080,
                      help="dashboard port (a free one if it is taken)")
    demo.add_argument("--state", metavar="DIR", default=None,
                      help="keep configs, logs and data here (default: a temporary directory)")
    demo.add_argument("--baud", type=int, default=19200)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
