"""Run a node agent: ``python -m flyslice.nodeagent --node gw1 --state-dir /var/lib/flyslice ...``"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from flyslice.nodeagent.agent import Agent, AgentConfig
from flyslice.nodeagent.gctune import tune_for_data_plane
from flyslice.nodeagent.runtime.modules import load_public_key
from flyslice.nodeagent.sources import FileSource


def main(argv: list[str] | None = None) -> int:
    if "--kube" in (sys.argv[1:] if argv is None else argv):
        # Cluster mode has its own options (kubeconfig, pod namespace, --no-pods): see kube_agent.
        from flyslice.nodeagent.kube.agent import main as cluster_main

        return cluster_main(argv)
    p = argparse.ArgumentParser(prog="flyslice.nodeagent", description="flyslice node agent")
    p.add_argument("--node", required=True, help="EdgeNode name this agent serves")
    p.add_argument("--state-dir", type=Path, required=True, help="desired-state cache, VNF records")
    p.add_argument("--listen", default="127.0.0.1:0", help="data-plane TCP host:port")
    p.add_argument("--http", default=None, help="telemetry/ingress HTTP host:port")
    p.add_argument("--desired-file", type=Path, help="JSON/YAML desired instances (embedded/offline mode)")
    p.add_argument("--kube", action="store_true", help="cluster mode: NFInstances from the Kubernetes API "
                   "(see `flyslice agent --kube --help`)")  # fmt: skip
    p.add_argument("--namespace", default=None)
    p.add_argument("--peer", action="append", default=[], help="node=host:port of another agent")
    p.add_argument("--mqtt", default=None, help="host:port of the MQTT broker devices publish to")
    p.add_argument("--trusted-key", action="append", default=[], help="ed25519 public key (PEM file)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between syncs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    peers = dict(item.split("=", 1) for item in args.peer)
    mqtt = None
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        mqtt = (host, int(port))
    config = AgentConfig(
        node=args.node, state_dir=args.state_dir, listen=args.listen, http_listen=args.http, peers=peers,
        mqtt=mqtt, trusted_keys=[load_public_key(Path(k).read_bytes()) for k in args.trusted_key],
    )  # fmt: skip
    agent = Agent(config)
    tune_for_data_plane()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        if args.desired_file:
            agent.run(FileSource(args.desired_file), args.interval, stop)
        else:
            stop.wait()
    finally:
        agent.stop(stop_vnfs=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
