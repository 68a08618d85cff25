import { mkdir, writeFile } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { findBinary, freePorts, spawnDaemon, tempDir, waitFor, type Daemon, type TempDir } from "@postroom/mail-servers";

/** Options for {@link startNatsCluster}. */
export interface NatsClusterOptions {
  /** How many nats-server processes (default 3: the smallest cluster that survives losing one). */
  nodes?: number;
  /** Appended to every node's configuration (e.g. an `authorization { ... }` block). */
  extraConfig?: string;
  /** Per-node file store limit (default 1GB). */
  maxFileStore?: string;
}

/** One nats-server of a {@link NatsCluster}. */
export interface NatsClusterNode {
  /** `n1`, `n2`, ...: the server_name, which JetStream reports as a stream's leader. */
  readonly name: string;
  /** `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** The monitoring port (`/varz`, `/connz`, `/jsz`). */
  readonly httpPort: number;
  running(): boolean;
  /** The server's pid while it runs (for SIGSTOP and the like). */
  pid(): number | undefined;
}

/**
 * Three (or more) nats-server 2.9 processes on loopback ports, joined by cluster routes, each with
 * JetStream file storage in a temporary folder of its own. A node can be killed and started again
 * on the same ports and store, as an operator's pod would be; the JetStream API tells which node
 * leads a stream.
 */
export interface NatsCluster {
  readonly nodes: readonly NatsClusterNode[];
  /** Every node's client URL, comma-separated: what a service's `nats.url` is given. */
  readonly url: string;
  readonly urls: readonly string[];
  /** The node by name (`n1`...). */
  node(name: string): NatsClusterNode;
  /** SIGKILL (a crash, default) or SIGTERM (an orderly shutdown, which also hands leadership over). */
  kill(name: string, signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** Starts a stopped node again on its ports and store; resolves once its JetStream is current (/healthz). */
  restart(name: string): Promise<void>;
  /**
   * The server_name of the current leader of `stream` (a KV bucket is stream `KV_<bucket>`, an
   * object store `OBJ_<bucket>`), from `$JS.API.STREAM.INFO`; waits until there is one.
   */
  leaderOf(stream: string, timeoutMs?: number): Promise<string>;
  /** Waits until `stream` has a leader and every replica but those on stopped nodes is current. */
  waitHealthy(stream: string, timeoutMs?: number): Promise<void>;
  /** Names of the client connections each running node holds (from its `/connz`). */
  connections(): Promise<Map<string, string[]>>;
  /** What a node logged. */
  output(name: string): string;
  stop(): Promise<void>;
}

interface NodeState {
  name: string;
  port: number;
  clusterPort: number;
  httpPort: number;
  configPath: string;
  logPath: string;
  daemon: Daemon | undefined;
}

/**
 * Starts a JetStream cluster of `nodes` nats-servers (the binary on PATH; 2.9.x here). Ports are
 * picked free once and kept for the cluster's life, so a restarted node rejoins where it was.
 */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const count = options.nodes ?? 3;
  const dir: TempDir = tempDir("nats-cluster");
  const binary = findBinary("nats-server", "POSTROOM_NATS_SERVER_BIN");
  const ports = await freePorts(count * 3);
  const clusterName = `pr${ports[0]}`;
  const states: NodeState[] = [];
  for (let i = 0; i < count; i++) {
    const name = `n${i + 1}`;
    const home = join(dir.path, name);
    await mkdir(home, { recursive: true });
    states.push({ name, port: ports[i * 3]!, clusterPort: ports[i * 3 + 1]!, httpPort: ports[i * 3 + 2]!, configPath: join(home, "nats.conf"), logPath: join(home, "nats.log"), daemon: undefined });
  }
  for (const s of states) {
    const routes = states.filter((o) => o !== s).map((o) => `    "nats-route://127.0.0.1:${o.clusterPort}"`);
    await writeFile(
      s.configPath,
      [
        `server_name: "${s.name}"`,
        `listen: "127.0.0.1:${s.port}"`,
        `http: "127.0.0.1:${s.httpPort}"`,
        "jetstream {",
        `  store_dir: "${join(dir.path, s.name, "js")}"`,
        "  max_memory_store: 64MB",
        `  max_file_store: ${options.maxFileStore ?? "1GB"}`,
        "}",
        "cluster {",
        `  name: "${clusterName}"`,
        `  listen: "127.0.0.1:${s.clusterPort}"`,
        "  routes: [",
        ...routes,
        "  ]",
        "}",
        options.extraConfig ?? "",
        "",
      ].join("\n"),
    );
  }

  const start = (s: NodeState) => {
    s.daemon = spawnDaemon({ command: binary, args: ["-c", s.configPath], outputPath: s.logPath });
  };
  const listening = (s: NodeState, timeoutMs: number) =>
    waitFor(
      () =>
        s.daemon?.running()
          ? new Promise<boolean>((resolve) => {
              const socket = tcpConnect(s.port, "127.0.0.1", () => {
                socket.destroy();
                resolve(true);
              }).once("error", () => resolve(false));
            })
          : Promise.reject(new Error(`nats-server ${s.name} exited:\n${s.daemon?.output() ?? ""}`)),
      { timeoutMs, what: `nats-server ${s.name} on ${s.port}` },
    );
  // An open client port is not a ready node: a restarted server accepts clients before it has
  // caught up with the meta group and its streams, and JetStream requests sent to it time out
  // meanwhile. Its /healthz answers ok only once JetStream on it is current.
  const healthy = (s: NodeState, timeoutMs: number) =>
    waitFor(
      async () => {
        if (!s.daemon?.running()) throw new Error(`nats-server ${s.name} exited:\n${s.daemon?.output() ?? ""}`);
        try {
          const r = await fetch(`http://127.0.0.1:${s.httpPort}/healthz`, { signal: AbortSignal.timeout(3_000) });
          return r.ok && ((await r.json()) as { status?: string }).status === "ok";
        } catch {
          return false;
        }
      },
      { timeoutMs, intervalMs: 200, what: `nats-server ${s.name} healthy (/healthz)` },
    );
  const byName = (name: string) => {
    const s = states.find((x) => x.name === name);
    if (!s) throw new Error(`no node ${name} (nodes: ${states.map((x) => x.name).join(", ")})`);
    return s;
  };

  for (const s of states) start(s);
  for (const s of states) await listening(s, 30_000);
  for (const s of states) await healthy(s, 60_000);

  const urls = states.map((s) => `nats://127.0.0.1:${s.port}`);
  let admin: NatsConnection | undefined;
  const adminConnection = async () => {
    admin ??= await connect({ servers: urls, name: "postroom-testkit-cluster", maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 5_000 });
    return admin;
  };
  // A cluster answers JetStream only once its meta group has a leader.
  await waitFor(
    async () => {
      try {
        const jsm = await jetstreamManager(await adminConnection(), { timeout: 3_000 });
        await jsm.getAccountInfo();
        return true;
      } catch {
        return false;
      }
    },
    { timeoutMs: 60_000, intervalMs: 250, what: "the JetStream meta leader of the test cluster" },
  );

  const streamInfo = async (stream: string) => {
    const jsm = await jetstreamManager(await adminConnection(), { timeout: 3_000 });
    return jsm.streams.info(stream);
  };

  const cluster: NatsCluster = {
    nodes: states.map((s) => ({
      name: s.name,
      url: `nats://127.0.0.1:${s.port}`,
      port: s.port,
      httpPort: s.httpPort,
      running: () => s.daemon?.running() ?? false,
      pid: () => (s.daemon?.running() ? s.daemon.child.pid : undefined),
    })),
    url: urls.join(","),
    urls,
    node(name) {
      const n = cluster.nodes.find((x) => x.name === name);
      if (!n) throw new Error(`no node ${name} (nodes: ${states.map((x) => x.name).join(", ")})`);
      return n;
    },
    async kill(name, signal = "SIGKILL") {
      const s = byName(name);
      const d = s.daemon;
      if (!d?.running()) return;
      if (signal === "SIGKILL") {
        d.child.kill("SIGKILL");
        await d.exited;
      } else {
        await d.stop(15_000);
      }
    },
    async restart(name) {
      const s = byName(name);
      if (s.daemon?.running()) return;
      start(s);
      await listening(s, 60_000);
      await healthy(s, 90_000);
    },
    async leaderOf(stream, timeoutMs = 30_000) {
      return waitFor(
        async () => {
          try {
            return (await streamInfo(stream)).cluster?.leader || undefined;
          } catch {
            return undefined;
          }
        },
        { timeoutMs, intervalMs: 200, what: `a leader for stream ${stream}` },
      );
    },
    async waitHealthy(stream, timeoutMs = 60_000) {
      const up = new Set(states.filter((s) => s.daemon?.running()).map((s) => s.name));
      await waitFor(
        async () => {
          try {
            const info = await streamInfo(stream);
            const leader = info.cluster?.leader;
            if (!leader) return false;
            const peers = (info.cluster?.replicas ?? []).filter((r) => up.has(r.name));
            return peers.every((r) => r.current);
          } catch {
            return false;
          }
        },
        { timeoutMs, intervalMs: 250, what: `stream ${stream} with a leader and current replicas` },
      );
    },
    async connections() {
      const out = new Map<string, string[]>();
      for (const s of states) {
        if (!s.daemon?.running()) continue;
        try {
          const r = await fetch(`http://127.0.0.1:${s.httpPort}/connz?limit=1024`, { signal: AbortSignal.timeout(3_000) });
          const body = (await r.json()) as { connections?: { name?: string }[] };
          out.set(s.name, (body.connections ?? []).map((c) => c.name ?? ""));
        } catch {
          out.set(s.name, []);
        }
      }
      return out;
    },
    output: (name) => byName(name).daemon?.output() ?? "",
    async stop() {
      await admin?.close().catch(() => undefined);
      await Promise.all(states.map((s) => s.daemon?.stop(5_000)));
      await dir.remove();
    },
  };
  return cluster;
}
