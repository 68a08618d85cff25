import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { PostroomConfigInput } from "@postroom/config";
import { names, type MailboxStatus, type Names } from "@postroom/contracts";
import { openKv, type KV, type NatsConnection } from "@postroom/nats-kit";
import {
  natsUrl,
  startDovecot,
  tempDir,
  testNamespace,
  waitFor,
  type DovecotServer,
  type TempDir,
  type TestDatabase,
} from "@postroom/testkit";
import pg from "pg";
import { secureWorld, worldDatabase, type SecureOptions, type WorldSecurity } from "./secure.js";
import { PostroomSystem, serviceCommand, type ServiceName } from "./system.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));

/**
 * Dovecot settings for ingestion tests: microsecond timestamps, each session's replica (the ID
 * the poller sends) and the client port in the log, so tests can audit from the server's side who
 * was connected to which mailbox when.
 */
export const AUDIT_DOVECOT_CONFIG = `
log_timestamp = "%Y-%m-%d %H:%M:%S.%{usecs} "
imap_id_log = *
login_log_format_elements = user=<%u> method=%m rip=%r rport=%p lip=%l mpid=%e %c session=<%{session}>
`;

/** One mailbox of an ingestion world. */
export interface WorldMailbox {
  id: string;
  user: string;
  password: string;
  /** Overrides of the mailbox's inbound settings (protocol, interval, first start, ...). */
  inbound?: Record<string, unknown>;
  /** The tenant (default acme). */
  tenant?: string;
}

/** How to start a poller process. */
export interface PollerProcessOptions {
  /** Run services/imap-poller/dist/main.js (see `buildPoller`) instead of the sources through tsx. */
  compiled?: boolean;
  /** Extra node flags. */
  nodeArgs?: string[];
}

/** The node flags of imap-poller's `start` script (services/imap-poller/package.json). */
export const POLLER_NODE_ARGS = ["--max-semi-space-size=1", "--expose-gc"];
/**
 * The glibc malloc settings of the same script and of the image (Containerfile): buffers above
 * 128 KB are mmapped and given back to the system when freed, so a large message's chunks do not
 * stay resident after they are collected.
 */
export const POLLER_ENV: Record<string, string> = { MALLOC_ARENA_MAX: "2", MALLOC_MMAP_THRESHOLD_: "131072" };

/** Builds imap-poller and the workspace packages it needs into their dist/ folders (tsc). */
export async function buildPoller(): Promise<void> {
  // The e2e runner has built every service already (and others' processes run from those files).
  if (process.env.POSTROOM_E2E_COMPILED === "1") return;
  const { execFile } = await import("node:child_process");
  const { promisify } = await import("node:util");
  await promisify(execFile)("pnpm", ["--filter", "@postroom/imap-poller...", "build"], { cwd: ROOT });
}

/** A poller replica as a real process (several may run at once, unlike PostroomSystem's one per service). */
export class PollerProcess {
  readonly logs: string[] = [];
  readonly #child: ChildProcess;
  readonly exited: Promise<void>;

  constructor(readonly name: string, configPath: string, env: Record<string, string>, options: PollerProcessOptions = {}) {
    // Compiled: the built JavaScript, as production runs it (tsx's compiler alone costs ~40 MB of
    // resident memory, which would distort any memory measurement).
    const args = options.compiled
      ? [...(options.nodeArgs ?? []), join(ROOT, "services", "imap-poller", "dist", "main.js")]
      : serviceCommand("imap-poller", options.nodeArgs);
    this.#child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, ...env, POSTROOM_CONFIG: configPath, LOG_LEVEL: process.env.LOG_LEVEL ?? "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // A chunk may end in the middle of a line: keep the rest until the next chunk.
    const collector = () => {
      let rest = "";
      return (d: Buffer) => {
        const lines = (rest + d.toString("utf8")).split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) if (line.trim()) this.logs.push(line);
      };
    };
    this.#child.stdout!.on("data", collector());
    this.#child.stderr!.on("data", collector());
    this.exited = new Promise((r) => this.#child.once("exit", () => r()));
  }

  get pid(): number {
    return this.#child.pid!;
  }

  /** Resident memory of the process in bytes (VmRSS). */
  async rssBytes(): Promise<number> {
    const status = await readFile(`/proc/${this.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  }

  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill(signal);
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 20_000);
    await this.exited;
    clearTimeout(timer);
  }

  count(text: string): number {
    return this.logs.filter((l) => l.includes(text)).length;
  }
}

/**
 * A world for ingestion tests: a Dovecot with several mailboxes (server-side audit log on), a
 * database and NATS namespace, token-service and archiver (and optionally asd-bridge) through
 * PostroomSystem, and any number of imap-poller replicas as separate processes.
 */
export class IngestWorld {
  dovecot!: DovecotServer;
  db!: TestDatabase;
  dir!: TempDir;
  namespace!: string;
  names!: Names;
  nc!: NatsConnection;
  pool!: pg.Pool;
  system!: PostroomSystem;
  config!: PostroomConfigInput;
  configPath = "";
  readonly pollers: PollerProcess[] = [];
  security!: WorldSecurity;
  #status: KV | undefined;

  static async create(
    prefix: string,
    mailboxes: WorldMailbox[],
    options: {
      services?: ServiceName[];
      env?: Record<string, string>;
      tweak?: (c: PostroomConfigInput, world: IngestWorld) => void;
      /** Appended to Dovecot's config (e.g. connection limits for a thousand mailboxes). */
      dovecotConfig?: string;
      /** Secure bus / database roles; default from secure mode (see secure.ts). */
      security?: SecureOptions;
    } = {},
  ): Promise<IngestWorld> {
    const w = new IngestWorld();
    w.dir = tempDir(prefix);
    w.dovecot = await startDovecot({ users: mailboxes.map((m) => ({ user: m.user, password: m.password })), extraConfig: AUDIT_DOVECOT_CONFIG + (options.dovecotConfig ?? "") });
    w.db = await worldDatabase(prefix);
    w.namespace = testNamespace(prefix);
    w.names = names(w.namespace);
    w.pool = new pg.Pool({ connectionString: w.db.url, max: 2 });
    const tenants = new Map<string, NonNullable<PostroomConfigInput["tenants"]>[number]>();
    const env: Record<string, string> = { ...options.env };
    for (const m of mailboxes) {
      const tenantId = m.tenant ?? "acme";
      const tenant = tenants.get(tenantId) ?? { id: tenantId, acd: { type: "builtin" as const }, mailboxes: [] };
      const secret = `PW_${m.id.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
      env[secret] = m.password;
      const protocol = (m.inbound?.protocol as string | undefined) ?? "imap";
      tenant.mailboxes.push({
        id: m.id,
        address: m.user,
        inbound: {
          protocol: protocol as "imap",
          host: "127.0.0.1",
          port: protocol === "pop3" ? w.dovecot.info.pop3Port : w.dovecot.info.imapPort,
          tls: "none",
          checkIntervalSeconds: 30,
          ...m.inbound,
        },
        auth: { type: "password", password: `env:${secret}` },
        smtp: { host: "127.0.0.1", port: 9, tls: "none" },
      } as never);
      tenants.set(tenantId, tenant);
    }
    w.config = {
      version: 1,
      nats: { url: natsUrl(), namespace: w.namespace },
      database: { url: w.db.url },
      archive: { path: join(w.dir.path, "archive") },
      // Any free port: other test files run asd-bridge at the same time.
      agentApi: { port: 0 },
      tenants: [...tenants.values()],
    } as PostroomConfigInput;
    options.tweak?.(w.config, w);
    w.security = await secureWorld(w.config, w.dir.path, prefix, options.security);
    w.nc = w.security.nc;
    Object.assign(env, w.security.env);
    w.system = new PostroomSystem({ config: w.config, dir: w.dir.path, env });
    await w.system.start(options.services ?? ["token-service", "archiver"]);
    w.configPath = join(w.dir.path, "postroom.yaml");
    (w as { env?: Record<string, string> }).env = env;
    return w;
  }

  /**
   * A poller restricted to one tenant, as the chart runs it: POSTROOM_TENANTS and, on a secure
   * bus, the tenant's own user `imap-poller-<tenant>` (list it in `security.bus.extraUsers`).
   */
  tenantPollerEnv(tenant: string): Record<string, string> {
    const user = `imap-poller-${tenant}`;
    const password = this.security.bus?.passwords[user];
    if (this.security.bus && !password) throw new Error(`no NATS user ${user} on this world's bus: add it to security.bus.extraUsers`);
    return { POSTROOM_TENANTS: tenant, ...(password ? { NATS_USER: user, NATS_PASSWORD: password } : {}) };
  }

  /** Starts one more poller replica. */
  startPoller(name: string, env: Record<string, string> = {}, options: PollerProcessOptions = {}): PollerProcess {
    const p = new PollerProcess(name, this.configPath, { ...(this as { env?: Record<string, string> }).env, ...env }, options);
    this.pollers.push(p);
    return p;
  }

  async status(tenant: string, mailbox: string): Promise<MailboxStatus | undefined> {
    this.#status ??= await openKv(this.nc, this.names.buckets.mailboxStatus);
    const e = await this.#status.get(this.names.mailboxKey(tenant, mailbox));
    return e?.value.length ? (e.json() as MailboxStatus) : undefined;
  }

  async waitForState(tenant: string, mailbox: string, state: MailboxStatus["state"], timeoutMs = 30_000): Promise<MailboxStatus> {
    return waitFor(
      async () => {
        const s = await this.status(tenant, mailbox);
        return s?.state === state ? s : undefined;
      },
      { timeoutMs, what: () => `${tenant}/${mailbox} ${state}\n${this.dump()}` },
    );
  }

  async count(sql: string, params: unknown[] = []): Promise<number> {
    const { rows } = await this.pool.query<{ n: string }>(sql, params);
    return Number(rows[0]?.n ?? 0);
  }

  dump(lines = 60): string {
    const pollerLines = this.pollers.flatMap((p) => p.logs.slice(-20).map((l) => `${p.name}: ${l}`));
    return `${this.system.dump(lines)}\n${pollerLines.join("\n")}`;
  }

  async close(): Promise<void> {
    await Promise.all(this.pollers.map((p) => p.kill("SIGTERM")));
    await this.system?.stop();
    await this.pool?.end();
    await this.nc?.drain();
    await this.security?.closeNats(this.namespace);
    await this.db?.drop();
    await this.security?.dropRoles();
    await this.dovecot?.stop();
    await this.dir?.remove();
  }
}

/** One IMAP/POP3 session as Dovecot logged it. */
export interface AuditSession {
  user: string;
  session: string;
  replica: string | undefined;
  start: number;
  end: number | undefined;
}

/**
 * Reads Dovecot's log (written with AUDIT_DOVECOT_CONFIG) into sessions: login time, logout or
 * disconnect time, and the replica named in the client's ID.
 */
export function auditSessions(log: string): AuditSession[] {
  const sessions = new Map<string, AuditSession>();
  const replicaOf = new Map<string, string>();
  // "2026-11-28 16:27:36.096751 ..." in the machine's time zone (UTC here), to the microsecond.
  const time = (line: string) => Date.parse(`${line.slice(0, 10)}T${line.slice(11, 23)}Z`) + Number(line.slice(23, 26)) / 1000;
  for (const line of log.split("\n")) {
    const sid = /session=<([^>]+)>/.exec(line)?.[1] ?? /^[^ ]+ [^ ]+ \w+\([^)]*\)<\d+><([^>]+)>/.exec(line)?.[1];
    if (!sid) continue;
    const replica = /x-postroom-replica=([^,:\s]+)/.exec(line)?.[1];
    if (replica) replicaOf.set(sid, replica);
    const login = /: Login: user=<([^>]+)>/.exec(line);
    if (login) sessions.set(sid, { user: login[1]!, session: sid, replica: undefined, start: time(line), end: undefined });
    if (/: Disconnected/.test(line) && sessions.has(sid)) sessions.get(sid)!.end = time(line);
  }
  for (const s of sessions.values()) s.replica = replicaOf.get(s.session);
  return [...sessions.values()];
}

/** Pairs of sessions on the same mailbox from different replicas that overlapped in time. */
export function overlaps(sessions: AuditSession[], now = Date.now()): string[] {
  const out: string[] = [];
  const byUser = new Map<string, AuditSession[]>();
  for (const s of sessions) byUser.set(s.user, [...(byUser.get(s.user) ?? []), s]);
  for (const [user, list] of byUser) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i]!;
        const b = list[j]!;
        // Sessions without a replica are the test's own (APPEND, flag checks).
        if (a.replica === undefined || b.replica === undefined || a.replica === b.replica) continue;
        if (a.start < (b.end ?? now) && b.start < (a.end ?? now)) out.push(`${user}: ${a.replica} ${a.session} and ${b.replica} ${b.session}`);
      }
    }
  }
  return out;
}
