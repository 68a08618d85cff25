// The chaos run: the whole system under many faults at once, on a three-node JetStream cluster.
// `pnpm chaos [--mails N] [--minutes M] [--seed S] [--mailboxes K]`; see test/chaos/README.md.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFile, mkdir, open, readFile, rm, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import type { PostroomConfigInput } from "@postroom/config";
import { names as namesOf, type MailboxStatus } from "@postroom/contracts";
import { connectNats, openKv, type NatsConnection } from "@postroom/nats-kit";
import {
  buildMailCorpus,
  dovecotAuthListener,
  freePort,
  seededRandom,
  startDovecot,
  startNatsCluster,
  startPostfix,
  tempDir,
  waitFor,
  type DovecotServer,
  type NatsCluster,
  type PostfixServer,
} from "@postroom/testkit";
import nodemailer from "nodemailer";
import pg from "pg";
import { stringify } from "yaml";
import { PrivatePostgres } from "../support/private-postgres.js";
import { ServiceProcess, type ExitRecord } from "./processes.js";

const { values: argv } = parseArgs({
  options: {
    mails: { type: "string", default: "1200" },
    minutes: { type: "string", default: "2.5" },
    seed: { type: "string" },
    mailboxes: { type: "string", default: "20" },
    // How long the system may take to settle after the faults (default: the window, at least 2 minutes).
    "converge-minutes": { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const MAILS = Number(argv.mails);
const MINUTES = Number(argv.minutes);
const MAILBOXES = Number(argv.mailboxes);
const SEED = argv.seed !== undefined ? Number(argv.seed) : randomBytes(4).readUInt32BE() % 1_000_000;
const WINDOW_MS = MINUTES * 60_000;
const CONVERGE_MS = argv["converge-minutes"] !== undefined ? Number(argv["converge-minutes"]) * 60_000 : Math.max(120_000, WINDOW_MS);
const CUSTOMERS = 10;
const TENANT = "acme";
const AGENT_PW = `agent-${randomBytes(9).toString("base64url")}`;
const rng = seededRandom(SEED);
const pick = <T>(list: readonly T[]): T => list[Math.floor(rng() * list.length)]!;
const between = (lo: number, hi: number) => lo + rng() * (hi - lo);
const t0 = Date.now();
const stamp = () => `+${((Date.now() - t0) / 1000).toFixed(1)}s`;
const say = (line: string) => console.log(`[chaos ${stamp()}] ${line}`);

interface Mailbox {
  id: string;
  user: string;
  password: string;
  protocol: "imap" | "pop3";
}
interface SentMail {
  n: number;
  mailbox: Mailbox;
  via: "append" | "smtp";
  raw: Buffer;
  kind: string;
  /** From a customer with a real mailbox, so the agent may answer it. */
  answerable: boolean;
  deliveredAt?: number;
}

const violations: string[] = [];
const faults: string[] = [];
const exits: ExitRecord[] = [];
/**
 * Each SIGKILL of an smtp-sender, with the local ports of its connections to Postfix at that
 * moment (from `ss`): a reply the killed process had handed to Postfix but not yet recorded as
 * sent is sent again after the redelivery — SMTP's own crash window, which no client can close
 * (RFC 1047). The check attributes a duplicate to it only when the first copy's connection was one
 * of these and ended with the kill.
 */
const senderKills: { name: string; pid: number; at: number; ports: number[] }[] = [];
const fault = (line: string) => {
  faults.push(`${stamp()} ${line}`);
  say(`fault: ${line}`);
};

// ---------------------------------------------------------------- the mail to send (seeded)
const mailboxes: Mailbox[] = Array.from({ length: MAILBOXES }, (_, i) => {
  const id = `m${String(i).padStart(2, "0")}`;
  return { id, user: `${id}@acme.test`, password: `pw-${id}-${randomBytes(6).toString("hex")}`, protocol: i % 2 === 0 ? "imap" : "pop3" };
});
const customers = Array.from({ length: CUSTOMERS }, (_, i) => ({ user: `c${i}@customer.test`, password: `pw-c${i}-${randomBytes(6).toString("hex")}` }));
// Hostile and odd messages from the test kit's corpus. Left out: the auto-reply, bounce and bulk
// samples (archived but rightly never offered, which would blur "one session per mail"), bare-LF
// and NUL (Dovecot's Maildir stores them normalised, so the bytes served differ from the bytes
// sent — the archive must equal what the server serves, checked elsewhere), and the 25 MB one.
const corpus = buildMailCorpus({ bigAttachmentBytes: 2 * 1024 * 1024 }).filter((m) => !["auto-reply", "dsn-bounce", "loop-bulk", "bare-lf", "nul-bytes"].includes(m.name));
const CRLF = "\r\n";

function messageIdOf(n: number): string {
  return `chaos-${SEED}-${n}@customer.test`;
}

function buildMail(n: number): SentMail {
  const mailbox = pick(mailboxes);
  const routed: "append" | "smtp" = rng() < 0.7 ? "append" : "smtp";
  const customer = pick(customers);
  const head = [`Message-ID: <${messageIdOf(n)}>`, `X-Chaos-Id: ${n}`];
  if (rng() < 0.15) {
    // Hostile mail goes in by APPEND: Postfix rewrites some of it on submission (malformed and
    // overlong header lines, truncated MIME), so what reaches the mailbox is no longer what was
    // sent, and "archived as the source served it" could not be checked against the bytes sent.
    const via = "append";
    const c = pick(corpus);
    // The corpus' own Message-ID goes: ours identifies the mail everywhere.
    const text = c.raw.toString("latin1");
    const stripped = text.replace(/^Message-ID:[^\r\n]*\r\n/im, "");
    return { n, mailbox, via, raw: Buffer.concat([Buffer.from(head.join(CRLF) + CRLF, "latin1"), Buffer.from(stripped, "latin1")]), kind: `corpus:${c.name}`, answerable: false };
  }
  // Mixed sizes: most a few hundred bytes to a few KB, some ~100 KB, a few ~1 MB.
  const r = rng();
  const size = r < 0.8 ? Math.floor(between(50, 4_000)) : r < 0.97 ? Math.floor(between(20_000, 150_000)) : Math.floor(between(600_000, 1_200_000));
  const line = "Lorem ipsum dolor sit amet, grüße aus Köln, ça va? 0123456789";
  const body: string[] = [];
  let len = 0;
  while (len < size) {
    body.push(line);
    len += line.length + 2;
  }
  const lines = [
    ...head,
    `From: Customer ${customer.user.split("@")[0]} <${customer.user}>`,
    `To: ${mailbox.user}`,
    `Subject: chaos ${n}: where is my order ${Math.floor(rng() * 100_000)}?`,
    `Date: ${new Date(Date.UTC(2026, 11, 1, 12, 0, n % 60)).toUTCString().replace("GMT", "+0000")}`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    ...body,
    "",
  ];
  return { n, mailbox, via: routed, raw: Buffer.from(lines.join(CRLF), "utf8"), kind: `plain:${size < 10_000 ? "small" : size < 500_000 ? "medium" : "large"}`, answerable: true };
}
const mails: SentMail[] = Array.from({ length: MAILS }, (_, n) => buildMail(n));
/** The agent's choice, fixed by the seed: about a third of the answerable mail gets a reply. */
const willAnswer = new Set(mails.filter((m) => m.answerable && rng() < 0.34).map((m) => m.n));

// ---------------------------------------------------------------- the fault schedule (seeded)
type OneOff = "sigstop" | "nats-node" | "nats-leader" | "postgres" | "dovecot" | "disk";
const oneOffs: OneOff[] = ["sigstop", "nats-node", "nats-leader", "postgres", "dovecot", "disk"];
for (let i = oneOffs.length - 1; i > 0; i--) {
  const j = Math.floor(rng() * (i + 1));
  [oneOffs[i], oneOffs[j]] = [oneOffs[j]!, oneOffs[i]!];
}
const slot = WINDOW_MS / oneOffs.length;
const schedule = oneOffs.map((what, i) => ({ what, atMs: Math.floor(i * slot + rng() * slot * 0.2) }));
const killGaps: number[] = [];
for (let at = 3_000; at < WINDOW_MS; at += Math.floor(between(3_000, 8_000))) killGaps.push(at);
const killPicks = killGaps.map(() => rng());
const restartDelays = Array.from({ length: 4096 }, () => Math.floor(between(1_000, 3_000)));
let restartIndex = 0;

// ---------------------------------------------------------------- the world
const dir = tempDir("chaos");
let cluster: NatsCluster | undefined;
let postgres: PrivatePostgres | undefined;
let dovecot: DovecotServer | undefined;
let postfix: PostfixServer | undefined;
let nc: NatsConnection | undefined;
let pool: pg.Pool | undefined;
let tmpfs: string | undefined;
const procs: ServiceProcess[] = [];
let deliveriesPaused = false;
/** APPENDs the harness has sent and Dovecot has not yet answered: a restart waits for them. */
let appendsInFlight = 0;
let samplingPaused = false;
let stopped = false;

async function setUp(): Promise<{ archivePath: string; agentPort: number; namespace: string; diskNote: string }> {
  say(`seed ${SEED}: ${MAILS} mails, ${MAILBOXES} mailboxes, ${MINUTES} minutes of faults; work folder ${dir.path}`);
  const archivePath = join(dir.path, "archive");
  await mkdir(archivePath, { recursive: true });
  let diskNote: string;
  try {
    // A small tmpfs of the run's own: filling it cannot touch anyone else's disk. Sized for the
    // profile (the archive takes about 0.1 MiB per mail of this mix, replies included), with room
    // to spare so only the disk-fill fault ever brings it near the reserve.
    const mib = 400 + Math.ceil(MAILS * 0.25);
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${mib}m`, "tmpfs", archivePath], { stdio: "pipe" });
    tmpfs = archivePath;
    diskNote = `archive on a ${mib} MiB tmpfs mounted by the harness (root)`;
  } catch (error) {
    diskNote = `no tmpfs (${String((error as Error).message).split("\n")[0]}): the disk-fill fault is skipped`;
  }
  say(diskNote);
  const saslPort = await freePort();
  const mailServers = async () => {
    dovecot = await startDovecot({
      users: [...mailboxes.map((m) => ({ user: m.user, password: m.password })), ...customers],
      lmtp: true,
      extraConfig: `${dovecotAuthListener(saslPort)}\nmail_max_userip_connections = 50\n`,
    });
    // Client ports in Postfix's log: a reply found twice is traced to the connection it came on
    // (senderKills below), to tell SMTP's own crash window from a bug.
    postfix = await startPostfix({ lmtpPort: dovecot.info.lmtpPort!, saslPort, extraMainCf: "smtpd_client_port_logging = yes" });
  };
  const [c, p] = await Promise.all([startNatsCluster(), PrivatePostgres.create(), mailServers()]);
  cluster = c;
  postgres = p;
  if (!dovecot || !postfix) throw new Error("mail servers did not start");
  const namespace = `chaos${SEED}`;
  const agentPort = await freePort();
  const env: Record<string, string> = { AGENT_PW, NODE_EXTRA_CA_CERTS: postfix.info.caCertPath };
  for (const m of mailboxes) env[`PW_${m.id.toUpperCase()}`] = m.password;
  const config: PostroomConfigInput = {
    version: 1,
    nats: { url: cluster.url, namespace, replicas: 3 },
    database: { url: postgres.url },
    archive: { path: archivePath, minFreeBytes: 32 * 1024 * 1024 },
    agentApi: { host: "127.0.0.1", port: agentPort },
    tenants: [
      {
        id: TENANT,
        acd: { type: "builtin" },
        agents: ["ann", "bob", "cat"].map((id) => ({ id, password: "env:AGENT_PW", queues: ["email"], maxSessions: 40 })),
        mailboxes: mailboxes.map((m) => ({
          id: m.id,
          address: m.user,
          inbound:
            m.protocol === "imap"
              ? { protocol: "imap", host: "127.0.0.1", port: dovecot!.info.imapPort, tls: "none", checkIntervalSeconds: 10 }
              : { protocol: "pop3", host: "127.0.0.1", port: dovecot!.info.pop3Port, tls: "none", checkIntervalSeconds: 3, afterImport: { action: "delete" } },
          auth: { type: "password", password: `env:PW_${m.id.toUpperCase()}` },
          smtp: { host: "127.0.0.1", port: postfix!.info.submissionPort, tls: "starttls" },
        })),
      },
    ],
  } as PostroomConfigInput;
  const configPath = join(dir.path, "postroom.yaml");
  await writeFile(configPath, stringify(config));
  const logDir = join(dir.path, "logs");
  await mkdir(logDir, { recursive: true });
  const make = (name: string, service: ServiceProcess["service"]) =>
    new ServiceProcess(name, service, {
      configPath,
      env,
      logDir,
      restartDelayMs: () => restartDelays[restartIndex++ % restartDelays.length]!,
      onExit: (e) => {
        exits.push(e);
        if (!e.planned && !stopped) say(`unplanned exit of ${e.name} (code ${e.code}, signal ${e.signal}): ${e.lastLines.slice(-2).join(" | ").slice(0, 600)}`);
      },
    });
  procs.push(
    make("token-service", "token-service"),
    make("imap-poller-1", "imap-poller"),
    make("imap-poller-2", "imap-poller"),
    make("archiver-1", "archiver"),
    make("archiver-2", "archiver"),
    make("asd-bridge", "asd-bridge"),
    make("smtp-sender-1", "smtp-sender"),
    make("smtp-sender-2", "smtp-sender"),
  );
  for (const p of procs) p.start();
  nc = await connectNats({ url: cluster.url, name: "chaos-harness" });
  pool = new pg.Pool({ connectionString: postgres.url, max: 4 });
  // The harness's own idle connections die when the fault stops PostgreSQL: not an error of the run.
  pool.on("error", () => undefined);
  // Mail counts from the moment a mailbox is first opened ("from now"): wait for all of them.
  const status = await openKv(nc, namesOf(namespace).buckets.mailboxStatus, { replicas: 3 });
  await waitFor(
    async () => {
      for (const m of mailboxes) {
        const e = await status.get(namesOf(namespace).mailboxKey(TENANT, m.id)).catch(() => null);
        const s = e?.value.length ? (e.json() as MailboxStatus) : undefined;
        if (!s?.lastCheckAt) return false;
      }
      return true;
    },
    { timeoutMs: 180_000, intervalMs: 500, what: "every mailbox checked once" },
  );
  say("every mailbox has been checked once: mail and faults start");
  return { archivePath, agentPort, namespace, diskNote };
}

// ---------------------------------------------------------------- customers
const transports = new Map<string, nodemailer.Transporter>();
function transportOf(user: string, password: string): nodemailer.Transporter {
  let t = transports.get(user);
  if (!t) {
    t = nodemailer.createTransport({
      host: "127.0.0.1",
      port: postfix!.info.submissionPort,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user, pass: password },
      pool: true,
      maxConnections: 2,
    });
    transports.set(user, t);
  }
  return t;
}

async function deliver(m: SentMail): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    while (deliveriesPaused) await sleep(200);
    try {
      if (m.via === "append") {
        appendsInFlight++;
        try {
          await dovecot!.appendMessage(m.mailbox.user, m.raw);
        } finally {
          appendsInFlight--;
        }
      } else {
        // A customer's mail client submits through Postfix, which delivers over LMTP into Dovecot.
        const c = customers[m.n % customers.length]!;
        await transportOf(c.user, c.password).sendMail({ envelope: { from: c.user, to: [m.mailbox.user] }, raw: m.raw });
      }
      m.deliveredAt = Date.now();
      return;
    } catch (error) {
      // An APPEND that failed before the server answered may or may not have stored the message;
      // retrying could store it twice at the source, which is not what this run is about. Only
      // errors before the command was sent (no connection) are retried.
      const text = String((error as Error)?.message ?? error);
      if (attempt > 50 || !/ECONNREFUSED|ECONNRESET|connect|Greeting|closed/i.test(text)) throw new Error(`delivery of mail ${m.n} failed: ${text}`);
      await sleep(500);
    }
  }
}

async function sendAllMail(): Promise<void> {
  const gap = (WINDOW_MS * 0.85) / MAILS;
  const started = Date.now();
  const inflight = new Set<Promise<void>>();
  for (const m of mails) {
    if (stopped) return;
    const due = started + m.n * gap;
    if (due > Date.now()) await sleep(due - Date.now());
    const p = deliver(m)
      .catch((e) => void violations.push(String((e as Error).message)))
      .finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= 6) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  say(`all ${MAILS} mails delivered to the mail servers`);
}

// ---------------------------------------------------------------- the scripted agent
interface AgentState {
  token?: string;
}
const replied = new Map<number, string>(); // mail n -> requestId, once the API took the reply (202)
const closedSessions = new Set<string>();
async function agentLoop(agentPort: number, agents: string[]): Promise<void> {
  const base = `http://127.0.0.1:${agentPort}`;
  const state = new Map<string, AgentState>(agents.map((a) => [a, {}]));
  const call = async (method: string, path: string, token?: string, body?: unknown) => {
    const r = await fetch(base + path, {
      method,
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    return { status: r.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  while (!stopped) {
    for (const agent of agents) {
      const s = state.get(agent)!;
      try {
        if (!s.token) {
          const r = await call("POST", "/api/login", undefined, { tenant: TENANT, agent, password: AGENT_PW });
          if (r.status !== 200) continue;
          s.token = r.body.token as string;
        }
        // Queue membership lives in asd-bridge's memory: after a restart the agent joins again.
        const q = await call("POST", "/api/queues/login", s.token, { queues: ["email"] });
        if (q.status === 401) {
          s.token = undefined;
          continue;
        }
        const list = await call("GET", "/api/sessions", s.token);
        for (const session of (list.body.sessions as { id: string; state: string; subject: string }[] | undefined) ?? []) {
          if (stopped) break;
          if (!["assigned", "delivered"].includes(session.state) || closedSessions.has(session.id)) continue;
          const n = Number(/^chaos (\d+):/.exec(session.subject)?.[1] ?? NaN);
          await call("POST", `/api/sessions/${session.id}/accept`, s.token, {});
          if (Number.isInteger(n) && willAnswer.has(n)) {
            // The same requestId on every try: a retried click must not send twice.
            const requestId = `chaos-${SEED}-${n}`;
            const r = await call("POST", `/api/sessions/${session.id}/reply`, s.token, { text: `Dear customer, about mail ${n}: it is on its way.`, requestId });
            if (r.status !== 202) continue;
            replied.set(n, requestId);
          }
          const c = await call("POST", `/api/sessions/${session.id}/close`, s.token, { outcome: willAnswer.has(n) ? "answered" : "no-reply-needed" });
          if (c.status === 200) closedSessions.add(session.id);
        }
      } catch {
        // asd-bridge down or restarting: try again next round.
        s.token = s.token && Math.random() < 0.1 ? undefined : s.token;
      }
    }
    await sleep(300);
  }
}

// ---------------------------------------------------------------- the premature-change sampler
const present = new Map<number, Mailbox>(); // seen at the source at least once
const gone = new Set<number>();
const flagged = new Set<number>();
let samples = 0;
async function sampleOnce(): Promise<void> {
  const observed: { n: number; what: "seen" | "deleted" }[] = [];
  for (const m of mailboxes) {
    const here = new Map<number, boolean>();
    await dovecot!.withImap(m.user, async (client) => {
      const lock = await client.getMailboxLock("INBOX", { readOnly: true });
      try {
        if (client.mailbox === false || client.mailbox.exists === 0) return;
        for await (const msg of client.fetch("1:*", { flags: true, headers: ["x-chaos-id"] })) {
          const n = Number(/X-Chaos-Id:\s*(\d+)/i.exec(msg.headers?.toString("latin1") ?? "")?.[1] ?? NaN);
          if (Number.isInteger(n)) here.set(n, msg.flags?.has("\\Seen") ?? false);
        }
      } finally {
        lock.release();
      }
    });
    for (const [n, seen] of here) {
      present.set(n, m);
      // POP3 has no flags: Dovecot marks a message \Seen itself when a POP3 client RETRieves it,
      // which is reading, not Postroom's after-import action. There only deletion counts.
      if (seen && m.protocol === "imap" && !flagged.has(n)) observed.push({ n, what: "seen" });
    }
    for (const [n, mb] of present) if (mb === m && !here.has(n) && !gone.has(n)) observed.push({ n, what: "deleted" });
  }
  const observedAt = new Date();
  samples++;
  if (observed.length === 0) return;
  // Asked after the observation: a change seen at the source must already be committed, and
  // committed (archived_at, the transaction's time) no later than it was seen.
  const { rows } = await pool!.query<{ rfc_message_id: string; archived_at: Date }>("SELECT rfc_message_id, archived_at FROM messages WHERE rfc_message_id = ANY($1)", [
    observed.flatMap((o) => [messageIdOf(o.n), `<${messageIdOf(o.n)}>`]),
  ]);
  const committed = new Map(rows.map((r) => [r.rfc_message_id.replace(/^<|>$/g, ""), r.archived_at]));
  for (const o of observed) {
    if (o.what === "seen") flagged.add(o.n);
    else gone.add(o.n);
    const at = committed.get(messageIdOf(o.n));
    if (!at || at.getTime() > observedAt.getTime()) violations.push(`premature source change: mail ${o.n} ${o.what} at the source at ${observedAt.toISOString()} but ${at ? `committed at ${at.toISOString()}` : "not archived"}`);
  }
}
async function samplerLoop(): Promise<void> {
  while (!stopped) {
    if (!samplingPaused) await sampleOnce().catch(() => undefined);
    await sleep(2_000);
  }
}

// ---------------------------------------------------------------- faults
/** Local ports of `pid`'s established connections to Postfix's submission port. */
function submissionPortsOf(pid: number): number[] {
  try {
    const out = execFileSync("ss", ["-tnpH", "state", "established", `( dport = :${postfix!.info.submissionPort} )`], { encoding: "utf8" });
    return out
      .split("\n")
      .filter((l) => l.includes(`pid=${pid},`))
      .map((l) => Number(/127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+/.exec(l)?.[1]))
      .filter((port) => Number.isInteger(port));
  } catch {
    return [];
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let sigstopped: ServiceProcess | undefined;

async function runFaults(archivePath: string, namespace: string): Promise<void> {
  const started = Date.now();
  const random = (async () => {
    for (let i = 0; i < killGaps.length; i++) {
      const due = started + killGaps[i]!;
      if (due > Date.now()) await sleep(due - Date.now());
      if (stopped) return;
      const candidates = procs.filter((p) => p.running() && p !== sigstopped);
      const victim = candidates[Math.floor(killPicks[i]! * candidates.length)];
      if (!victim) continue;
      fault(`SIGKILL ${victim.name} (pid ${victim.pid})`);
      if (victim.service === "smtp-sender" && victim.pid !== undefined) senderKills.push({ name: victim.name, pid: victim.pid, at: Date.now(), ports: submissionPortsOf(victim.pid) });
      victim.kill("SIGKILL");
    }
  })();
  const stream = namesOf(namespace).streams.mail;
  for (const s of schedule) {
    const due = started + s.atMs;
    if (due > Date.now()) await sleep(due - Date.now());
    if (stopped) break;
    switch (s.what) {
      case "sigstop": {
        const victim = pick(procs.filter((p) => p.running()));
        sigstopped = victim;
        fault(`SIGSTOP ${victim.name} for 20 s`);
        victim.signal("SIGSTOP");
        await sleep(20_000);
        victim.signal("SIGCONT");
        sigstopped = undefined;
        fault(`SIGCONT ${victim.name}`);
        break;
      }
      case "nats-node": {
        const node = pick(cluster!.nodes).name;
        fault(`SIGKILL nats-server ${node}; restart in 15 s`);
        await cluster!.kill(node);
        await sleep(15_000);
        await cluster!.restart(node);
        fault(`nats-server ${node} back`);
        break;
      }
      case "nats-leader": {
        const leader = await cluster!.leaderOf(stream);
        fault(`restart nats-server ${leader}, leader of ${stream} (SIGTERM, start)`);
        await cluster!.kill(leader, "SIGTERM");
        await cluster!.restart(leader);
        fault(`nats-server ${leader} back; ${stream} now led by ${await cluster!.leaderOf(stream)}`);
        break;
      }
      case "postgres": {
        fault("stop PostgreSQL for 30 s");
        await postgres!.stop();
        await sleep(30_000);
        await postgres!.start();
        fault("PostgreSQL back");
        break;
      }
      case "dovecot": {
        // The harness's own deliveries and samples wait: an APPEND cut in half could store a
        // message twice at the source, which would be the harness's doing, not Postroom's.
        // An APPEND already sent is let finish first (seed 7 once cut one: "Unexpected close").
        deliveriesPaused = true;
        samplingPaused = true;
        const drained = Date.now() + 30_000;
        while (appendsInFlight > 0 && Date.now() < drained) await sleep(50);
        fault("restart Dovecot");
        await dovecot!.restart();
        deliveriesPaused = false;
        samplingPaused = false;
        fault("Dovecot back");
        break;
      }
      case "disk": {
        if (!tmpfs) {
          fault("disk fill skipped (no tmpfs)");
          break;
        }
        const fs = await statfs(archivePath);
        const free = fs.bavail * fs.bsize;
        const fill = Math.max(0, free - 8 * 1024 * 1024);
        fault(`fill the archive disk (${Math.round(fill / 1048576)} MiB, leaving 8 MiB < the 32 MiB reserve) for 20 s`);
        const fh = await open(join(archivePath, "chaos-fill.bin"), "w");
        const chunk = Buffer.alloc(4 * 1024 * 1024, 0x5a);
        for (let written = 0; written < fill; written += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, fill - written)).catch(() => undefined);
        await fh.close();
        await sleep(20_000);
        await rm(join(archivePath, "chaos-fill.bin"));
        fault("archive disk freed");
        break;
      }
    }
  }
  await random;
}

// ---------------------------------------------------------------- checks
async function converge(namespace: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const expected = MAILS;
  while (Date.now() < deadline) {
    const { rows } = await pool!.query<{ n: string }>("SELECT count(DISTINCT rfc_message_id) AS n FROM messages WHERE direction = 'inbound'").catch(() => ({ rows: [{ n: "0" }] }));
    const archived = Number(rows[0]!.n);
    const replies = await pool!.query<{ n: string }>("SELECT count(*) AS n FROM agent_replies WHERE state NOT IN ('sent', 'failed')").catch(() => ({ rows: [{ n: "1" }] }));
    const open = await pool!.query<{ n: string }>("SELECT count(*) AS n FROM sessions WHERE state NOT IN ('completed', 'failed', 'closed')").catch(() => ({ rows: [{ n: "1" }] }));
    const lag = await consumerLag(namespace).catch(() => ["?"]);
    if (archived >= expected && Number(replies.rows[0]!.n) === 0 && Number(open.rows[0]!.n) === 0 && lag.length === 0) return;
    say(`converging: ${archived}/${expected} archived, ${replies.rows[0]!.n} replies on their way, ${open.rows[0]!.n} sessions open, lag ${lag.join(", ") || "0"}`);
    await sleep(5_000);
  }
}

async function consumerLag(namespace: string): Promise<string[]> {
  const jsm = await jetstreamManager(nc!, { timeout: 5_000 });
  const out: string[] = [];
  const n = namesOf(namespace);
  for (const stream of Object.values(n.streams)) {
    for await (const c of jsm.consumers.list(stream)) {
      if (c.num_pending + c.num_ack_pending > 0) out.push(`${stream}/${c.name}: ${c.num_pending} pending, ${c.num_ack_pending} unacknowledged`);
    }
  }
  return out;
}

async function check(archivePath: string, namespace: string): Promise<Record<string, unknown>> {
  const { rows } = await pool!.query<{ id: string; rfc_message_id: string; sha256: string; archive_path: string; classification: string; sessions: string }>(
    "SELECT m.id, m.rfc_message_id, m.sha256, m.archive_path, m.classification, (SELECT count(*) FROM sessions s WHERE s.message_id = m.id) AS sessions FROM messages m WHERE m.direction = 'inbound'",
  );
  const byN = new Map<number, typeof rows>();
  for (const r of rows) {
    const n = Number(/chaos-\d+-(\d+)@/.exec(r.rfc_message_id)?.[1] ?? NaN);
    if (!Number.isInteger(n)) {
      violations.push(`an archived inbound message the run did not send: ${r.rfc_message_id}`);
      continue;
    }
    byN.set(n, [...(byN.get(n) ?? []), r]);
  }
  let lost = 0;
  let duplicated = 0;
  let mismatched = 0;
  let sessionProblems = 0;
  // How many times Dovecot may have stored each message it took over LMTP. A Dovecot restart can
  // cut an LMTP delivery after the message was saved ("421 4.3.2 Shutting down" in reply to the
  // end of DATA): Postfix defers it and delivers it again, and the mailbox may then hold two
  // copies — two source messages, each rightly archived. That is the mail servers' at-least-once,
  // not Postroom's; Postfix's log says when it happened.
  const trace = postfixTrace(await readFile(postfix!.info.logPath, "utf8").catch(() => ""));
  const lmtpCopies = (messageId: string) => (trace.queued.get(messageId) ?? []).reduce((n, qid) => n + 1 + (trace.deferredAfterData.get(qid) ?? 0), 0);
  const storedTwiceAtSource: string[] = [];
  // Rows that are a second source copy of the same mail (above): `archived` counts them too.
  let extraSourceCopies = 0;
  for (const m of mails) {
    const found = byN.get(m.n) ?? [];
    if (found.length === 0) {
      lost++;
      violations.push(`lost: mail ${m.n} (${m.kind}, ${m.via} to ${m.mailbox.id}) was never archived`);
      continue;
    }
    const atSource = m.via === "smtp" ? Math.max(1, lmtpCopies(messageIdOf(m.n))) : 1;
    if (found.length > 1 && atSource > 1) extraSourceCopies += Math.min(found.length, atSource) - 1;
    if (found.length > 1 && atSource > 1) storedTwiceAtSource.push(`mail ${m.n}: archived ${found.length} times; Postfix delivered it again after Dovecot answered 421 to the end of DATA`);
    if (found.length > atSource) {
      duplicated++;
      violations.push(`duplicated: mail ${m.n} archived ${found.length} times (${atSource} at the source)`);
    }
    const r = found[0]!;
    const eml = await readFile(join(r.archive_path, "message.eml")).catch(() => Buffer.alloc(0));
    const hash = createHash("sha256").update(eml).digest("hex");
    // APPEND: the archive is the bytes appended. SMTP: Postfix and LMTP add trace headers on top
    // (Received, Return-Path, Delivered-To), so the bytes sent must end the archived file and only
    // trace headers may come before them.
    const prefix = eml.subarray(0, Math.max(0, eml.length - m.raw.length)).toString("latin1");
    const ok =
      hash === r.sha256 &&
      (m.via === "append" ? eml.equals(m.raw) : eml.subarray(eml.length - m.raw.length).equals(m.raw) && /^((Return-Path|Delivered-To|Received):[^\r\n]*\r\n([ \t][^\r\n]*\r\n)*)*$/i.test(prefix));
    if (!ok) {
      mismatched++;
      violations.push(`not byte-identical: mail ${m.n} (${m.via}, ${m.kind}) at ${r.archive_path}`);
    }
    const sessions = Number(r.sessions);
    if (sessions > 1 || (r.classification === "human" && sessions !== 1)) {
      sessionProblems++;
      violations.push(`mail ${m.n} (${r.classification}) has ${sessions} sessions`);
    }
  }

  // Replies: every one the agent API accepted is in agent_replies, sent, and in the customer's
  // mailbox exactly once (counted by Message-ID in Dovecot).
  const replyRows = (await pool!.query<{ command_id: string; state: string; rfc_message_id: string | null; to_addresses: string[] }>("SELECT command_id, state, rfc_message_id, to_addresses FROM agent_replies")).rows;
  const inboxes = new Map<string, number>();
  for (const c of customers) {
    await dovecot!.withImap(c.user, async (client) => {
      const lock = await client.getMailboxLock("INBOX", { readOnly: true });
      try {
        if (client.mailbox === false || client.mailbox.exists === 0) return;
        for await (const msg of client.fetch("1:*", { headers: ["message-id"] })) {
          const id = /Message-ID:\s*<?([^>\s]+)>?/i.exec(msg.headers?.toString("latin1") ?? "")?.[1];
          if (id) inboxes.set(id, (inboxes.get(id) ?? 0) + 1);
        }
      } finally {
        lock.release();
      }
    });
  }
  let replyProblems = 0;
  const smtpWindow: string[] = [];
  for (const r of replyRows) {
    const id = (r.rfc_message_id ?? "").replace(/^<|>$/g, "");
    const count = inboxes.get(id) ?? 0;
    // Postfix took the reply once and delivered it again after a 421 to the end of DATA: the
    // LMTP redelivery above, not a second send.
    if (r.state === "sent" && count > 1 && (trace.queued.get(id) ?? []).length === 1 && count <= lmtpCopies(id)) {
      storedTwiceAtSource.push(`reply ${r.command_id}: sent once, in the mailbox ${count} times; Postfix delivered it again after Dovecot answered 421 to the end of DATA`);
      continue;
    }
    if (r.state === "sent" && count > 1) {
      const why = inSmtpCrashWindow(trace, id);
      if (why) {
        smtpWindow.push(`reply ${r.command_id} in the customer's mailbox ${count} times: ${why}`);
        continue;
      }
    }
    if (r.state !== "sent" || count !== 1) {
      replyProblems++;
      violations.push(`reply ${r.command_id} (${r.state}) is in the customer's mailbox ${count} times`);
    }
  }
  if (replyRows.length < replied.size) {
    replyProblems++;
    violations.push(`the agent API accepted ${replied.size} replies but ${replyRows.length} are recorded`);
  }

  const stuck = (await pool!.query<{ id: string; state: string }>("SELECT id, state FROM sessions WHERE state NOT IN ('completed', 'failed', 'closed')")).rows;
  for (const s of stuck) violations.push(`stuck session ${s.id} in state ${s.state}`);
  const lag = await consumerLag(namespace);
  for (const l of lag) violations.push(`consumer lag: ${l}`);

  // Secrets: no mailbox, customer or agent password in any service's log.
  const secrets = [...mailboxes.map((m) => m.password), AGENT_PW];
  let leaked = 0;
  for (const p of procs) {
    const log = await readFile(p.logPath, "utf8").catch(() => "");
    for (const s of secrets) {
      if (log.includes(s)) {
        leaked++;
        violations.push(`secret in ${p.name}'s log`);
      }
    }
  }
  const unplanned = exits.filter((e) => !e.planned);
  for (const e of unplanned) violations.push(`unplanned exit of ${e.name} (code ${e.code}, signal ${e.signal}): ${e.lastLines.slice(-1).join("").slice(0, 400)}`);
  return {
    archived: rows.length,
    lost,
    duplicated,
    notByteIdentical: mismatched,
    sessionProblems,
    replies: { acceptedByApi: replied.size, recorded: replyRows.length, problems: replyProblems, inSmtpCrashWindow: smtpWindow.length, smtpCrashWindow: smtpWindow },
    stuckSessions: stuck.length,
    consumersLagging: lag.length,
    secretsInLogs: leaked,
    unplannedExits: unplanned.length,
    samples,
    sourceChangesObserved: { seen: flagged.size, deleted: gone.size },
    storedMoreThanOnceAtSource: storedTwiceAtSource,
    extraSourceCopies,
    archivePath,
    archiveUsedMiB: await statfs(archivePath).then((f) => Math.round(((f.blocks - f.bfree) * f.bsize) / 1048576)),
  };
}

/** What Postfix's log says about each message and each submission connection (client ports logged). */
interface PostfixTrace {
  /** Message-ID → queue ids, in the order Postfix took them. */
  queued: Map<string, string[]>;
  /** Queue id → the client port of the connection it came on, and its line number. */
  client: Map<string, { port: number; line: number }>;
  /** Client port → line numbers where a connection from it ended without QUIT ("lost connection after …"). */
  lost: Map<number, number[]>;
  /** Client port → line numbers where a connection from it began. */
  connects: Map<number, number[]>;
  /** Queue id → LMTP deliveries deferred in reply to the end of DATA (the server may have saved it). */
  deferredAfterData: Map<string, number>;
}

function postfixTrace(log: string): PostfixTrace {
  const t: PostfixTrace = { queued: new Map(), client: new Map(), lost: new Map(), connects: new Map(), deferredAfterData: new Map() };
  const push = <K, V>(m: Map<K, V[]>, k: K, v: V) => m.set(k, [...(m.get(k) ?? []), v]);
  log.split("\n").forEach((l, line) => {
    let m: RegExpExecArray | null;
    if ((m = /cleanup\[\d+\]: (\w+): message-id=<([^>]+)>/.exec(l))) push(t.queued, m[2]!, m[1]!);
    else if ((m = /smtpd\[\d+\]: (\w+): client=[^[]*\[[^\]]+\]:(\d+)/.exec(l))) t.client.set(m[1]!, { port: Number(m[2]), line });
    else if ((m = /smtpd\[\d+\]: lost connection after [A-Z-]+ from [^[]*\[[^\]]+\]:(\d+)/.exec(l))) push(t.lost, Number(m[1]), line);
    else if ((m = /smtpd\[\d+\]: connect from [^[]*\[[^\]]+\]:(\d+)/.exec(l))) push(t.connects, Number(m[1]), line);
    else if ((m = /lmtp\[\d+\]: (\w+): to=.*status=deferred .*in reply to end of DATA/.exec(l))) t.deferredAfterData.set(m[1]!, (t.deferredAfterData.get(m[1]!) ?? 0) + 1);
  });
  return t;
}

/**
 * Why a reply found more than once is SMTP's crash window and not a bug, or undefined. Every copy
 * but the last must have come on a connection of an smtp-sender the harness SIGKILLed (its port
 * among the killed process's connections at the kill), and that connection must have ended right
 * there — lost, not closed with QUIT, before any new connection from the same port. Then the
 * sender died holding a message Postfix had taken and it had not yet recorded; its redelivery
 * sent it again, as RFC 1047 says any SMTP client would.
 */
function inSmtpCrashWindow(t: PostfixTrace, messageId: string): string | undefined {
  const copies = t.queued.get(messageId) ?? [];
  if (copies.length < 2) return undefined;
  const explained: string[] = [];
  for (const qid of copies.slice(0, -1)) {
    const c = t.client.get(qid);
    if (!c) return undefined;
    const kill = senderKills.find((k) => k.ports.includes(c.port));
    if (!kill) return undefined;
    const lostAt = (t.lost.get(c.port) ?? []).find((l) => l > c.line);
    const reconnect = (t.connects.get(c.port) ?? []).find((l) => l > c.line);
    if (lostAt === undefined || (reconnect !== undefined && reconnect < lostAt)) return undefined;
    explained.push(`copy ${qid} came on port ${c.port} of ${kill.name} (pid ${kill.pid}), SIGKILLed at ${stampOf(kill.at)} before recording it; the connection was lost there`);
  }
  return explained.join("; ");
}

const stampOf = (at: number) => `+${((at - t0) / 1000).toFixed(1)}s`;

// ---------------------------------------------------------------- main
async function tearDown(): Promise<void> {
  stopped = true;
  await Promise.all(procs.map((p) => p.stop().catch(() => undefined)));
  for (const t of transports.values()) t.close();
  await pool?.end().catch(() => undefined);
  await nc?.close().catch(() => undefined);
  // Postfix's log goes with the services' (its folder is removed when it stops).
  if (postfix) await copyFile(postfix.info.logPath, join(dir.path, "logs", "postfix.log")).catch(() => undefined);
  await postfix?.stop().catch(() => undefined);
  await dovecot?.stop().catch(() => undefined);
  await postgres?.remove().catch(() => undefined);
  await cluster?.stop().catch(() => undefined);
  if (tmpfs) {
    try {
      execFileSync("umount", [tmpfs], { stdio: "pipe" });
    } catch {
      execFileSync("umount", ["-l", tmpfs], { stdio: "pipe" });
    }
  }
  // A failed run keeps every process's log for the post-mortem (the work folder itself is removed
  // at exit by the test kit).
  if (code !== 0 || argv.keep) {
    const kept = `/tmp/postroom-chaos-logs-${SEED}-${Date.now()}`;
    execFileSync("cp", ["-r", join(dir.path, "logs"), kept]);
    console.log(`[chaos] logs kept in ${kept}`);
  }
  await dir.remove();
}

let code = 1;
try {
  const { archivePath, agentPort, namespace, diskNote } = await setUp();
  const setupSeconds = (Date.now() - t0) / 1000;
  const agent = agentLoop(agentPort, ["ann", "bob", "cat"]);
  const sampler = samplerLoop();
  // A fault the harness could not apply or undo (a server that would not come back) ends the run
  // as a harness failure, after the teardown, never as an unhandled rejection.
  let faultError: unknown;
  const faultsDone = runFaults(archivePath, namespace).catch((e) => {
    faultError = e;
  });
  await sendAllMail();
  await faultsDone;
  if (faultError) throw faultError;
  say("fault window over; waiting for the system to converge");
  const convergeStarted = Date.now();
  await converge(namespace, CONVERGE_MS);
  const convergeSeconds = (Date.now() - convergeStarted) / 1000;
  // The last samples, then stop the agent and the sampler before counting.
  await sampleOnce().catch(() => undefined);
  stopped = true;
  await Promise.all([agent, sampler]);
  const result = await check(archivePath, namespace);
  const report = {
    seed: SEED,
    profile: { mails: MAILS, minutes: MINUTES, mailboxes: MAILBOXES, imap: mailboxes.filter((m) => m.protocol === "imap").length, pop3: mailboxes.filter((m) => m.protocol === "pop3").length },
    delivered: { append: mails.filter((m) => m.via === "append").length, smtp: mails.filter((m) => m.via === "smtp").length, corpus: mails.filter((m) => m.kind.startsWith("corpus")).length },
    disk: diskNote,
    timings: { setupSeconds, convergeSeconds, totalSeconds: (Date.now() - t0) / 1000 },
    faults: { count: faults.length, randomKills: faults.filter((f) => f.includes("SIGKILL") && !f.includes("nats")).length, log: faults },
    result,
    violations: violations.length,
  };
  console.log("\n==================== chaos report ====================");
  console.log(JSON.stringify(report, null, 2));
  if (violations.length) {
    console.log(`\n${violations.length} violation(s):`);
    // Grouped by kind, so one flood (say, 300 premature changes) does not hide a single loss.
    const kinds = new Map<string, string[]>();
    for (const v of violations) {
      const kind = v.startsWith("reply ") ? "reply not delivered exactly once" : v.startsWith("stuck session") ? "stuck session" : v.startsWith("unplanned exit") ? "unplanned exit" : v.split(":")[0]!;
      kinds.set(kind, [...(kinds.get(kind) ?? []), v]);
    }
    for (const [kind, list] of kinds) {
      console.log(`  ${kind}: ${list.length}`);
      for (const v of list.slice(0, 25)) console.log(`    - ${v}`);
    }
  }
  console.log(`\nseed ${SEED}: ${violations.length === 0 ? "PASS" : "FAIL"} (replay with --seed ${SEED} --mails ${MAILS} --minutes ${MINUTES} --mailboxes ${MAILBOXES})`);
  code = violations.length === 0 ? 0 : 1;
} catch (error) {
  console.error(`[chaos] the run itself failed: ${(error as Error)?.stack ?? error}`);
  for (const p of procs) console.error(`--- ${p.name}\n${p.tail(6).join("\n")}`);
  code = 2;
} finally {
  await tearDown().catch((e) => console.error(`[chaos] teardown: ${e}`));
}
process.exit(code);
