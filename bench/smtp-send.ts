/**
 * smtp-sender throughput against Postfix's `smtp-source`, in one run on this machine.
 *
 * Both send the same number of messages of the same body size to the same local SMTP server
 * (Postfix's `smtp-sink`, which accepts everything and keeps nothing, so the server is not the
 * bottleneck), with 1 and with 4 connections at a time. smtp-sender keeps each mailbox's
 * connections open and logged in, so the like-for-like baseline is `smtp-source -d` (the next
 * message over the same connection); smtp-source's default, one message per connection, is
 * printed beside it. Postroom's figure is the whole path of a send command: JetStream command →
 * compose → sends row → SMTP on the pooled connection (logged in once with AUTH PLAIN, a real
 * token-service answering the credential request) → "sent" row → archive copy in the object store
 * → mail.sent event → ack.
 *
 *   node --conditions=source --import tsx bench/smtp-send.ts [messages] [bodyBytes]
 *
 * Loopback only; stops by itself (each phase is capped at 180 s).
 */
import { spawn, execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { loadavg } from "node:os";
import { promisify } from "node:util";
import { PostroomConfig } from "@postroom/config";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { createPool, migrate } from "@postroom/db";
import { connectNats, ensureStreams, jetStreamOf, openKv, publishJson } from "@postroom/nats-kit";
import { SmtpSender } from "@postroom/smtp-sender";
import { createLogger } from "@postroom/telemetry";
import { cleanupNamespace, createTestDatabase, findBinary, freePort, natsUrl, readGreeting, testNamespace, waitFor } from "@postroom/testkit";
import { CredentialService } from "@postroom/token-service";

const run = promisify(execFile);
const COUNT = Number(process.argv[2] ?? 400);
const BODY = Number(process.argv[3] ?? 10_000);
const PHASE_LIMIT_MS = 180_000;

async function startSink(): Promise<{ port: number; stop: () => void }> {
  const port = await freePort();
  // -m: max concurrent sessions; backlog 256. It announces AUTH and accepts any login.
  // As root it insists on dropping privileges (-u); "nobody" exists everywhere.
  const asRoot = process.getuid?.() === 0 ? ["-u", "nobody"] : [];
  const child = spawn(findBinary("smtp-sink"), [...asRoot, "-m", "64", `127.0.0.1:${port}`, "256"], { stdio: "ignore" });
  await waitFor(() => readGreeting("127.0.0.1", port).then((g) => g.startsWith("220"), () => false), { timeoutMs: 10_000, what: "smtp-sink" });
  return { port, stop: () => child.kill("SIGTERM") };
}

async function smtpSource(port: number, sessions: number, reuse: boolean): Promise<number> {
  const started = performance.now();
  await run(findBinary("smtp-source"), [...(reuse ? ["-d"] : []), "-s", String(sessions), "-m", String(COUNT), "-l", String(BODY), "-f", "support@acme.test", "-t", "ann@customer.test", `127.0.0.1:${port}`], {
    timeout: PHASE_LIMIT_MS,
  });
  return COUNT / ((performance.now() - started) / 1000);
}

/** Messages per second, and CPU per message of this process (sender, token-service, pg and NATS clients). */
async function postroom(port: number, connections: number): Promise<{ rate: number; cpuMsPerMessage: number }> {
  const root = testNamespace("benchsmtp");
  const db = await createTestDatabase("benchsmtp");
  const names = namesOf(root);
  const config = PostroomConfig.parse({
    version: 1,
    nats: { url: natsUrl(), namespace: root },
    database: { url: db.url },
    archive: { path: "/tmp/postroom-bench-unused" },
    tenants: [
      {
        id: "acme",
        mailboxes: [
          {
            id: "support",
            address: "support@acme.test",
            inbound: { protocol: "imap", host: "127.0.0.1" },
            auth: { type: "password", password: "env:BENCH_SMTP_PASSWORD" },
            // No rate limits (messages or recipients) in the way: this measures the path, not Exchange's quota.
            smtp: { host: "127.0.0.1", port, tls: "none", ratePerMinute: 1_000_000, recipientsPerMinute: 1_000_000 },
          },
        ],
      },
    ],
  });
  const logger = createLogger({ service: "bench", level: process.env.LOG_LEVEL ?? "warn" });
  const nc = await connectNats({ url: natsUrl(), name: "bench-smtp" });
  const pool = createPool(db.url);
  let sent = 0;
  let sender: SmtpSender | undefined;
  let tokens: CredentialService | undefined;
  try {
    await migrate(pool);
    await ensureStreams(nc, streamDefinitions(names, { replicas: 1 }));
    tokens = new CredentialService({ nc, names, config, logger, env: { BENCH_SMTP_PASSWORD: "pw" }, statusKv: await openKv(nc, names.buckets.mailboxStatus) });
    await tokens.start();
    sender = new SmtpSender({ nc, names, config, pool, logger, connectionsPerMailbox: connections, events: { onSent: () => void sent++ } });
    const js = jetStreamOf(nc);
    const text = randomBytes(Math.ceil((BODY * 3) / 4)).toString("base64").slice(0, BODY).replace(/(.{76})/g, "$1\n");
    // Queue every command first, then start the sender: the clock measures sending only.
    for (let i = 0; i < COUNT; i++) {
      await publishJson(js, names.subjects.mailSend("acme", "support"), {
        version: "v1",
        commandId: `bench-${i.toString().padStart(6, "0")}`,
        tenant: "acme",
        mailbox: "support",
        kind: "new",
        to: ["ann@customer.test"],
        subject: `bench ${i}`,
        text,
        requestedAt: new Date().toISOString(),
      }, { msgId: `bench-${i}` });
    }
    const started = performance.now();
    const cpuAtStart = process.cpuUsage();
    await sender.start();
    await waitFor(() => sent >= COUNT, { timeoutMs: PHASE_LIMIT_MS, intervalMs: 20, what: `${COUNT} sends (have ${sent})` });
    const cpu = process.cpuUsage(cpuAtStart);
    return { rate: COUNT / ((performance.now() - started) / 1000), cpuMsPerMessage: (cpu.user + cpu.system) / 1000 / COUNT };
  } finally {
    await sender?.stop();
    await tokens?.stop();
    await nc.drain();
    await pool.end();
    await cleanupNamespace(natsUrl(), root).catch(() => undefined);
    await db.drop();
  }
}

const sink = await startSink();
try {
  const rows: { connections: number; postroom: number; cpuMs: number; reused: number; perConnection: number }[] = [];
  const loads: string[] = [];
  for (const connections of [1, 4]) {
    const reused = await smtpSource(sink.port, connections, true);
    const perConnection = await smtpSource(sink.port, connections, false);
    const ours = await postroom(sink.port, connections);
    rows.push({ connections, postroom: ours.rate, cpuMs: ours.cpuMsPerMessage, reused, perConnection });
    loads.push(loadavg().map((l) => l.toFixed(2)).join(" "));
  }
  console.log(`smtp-sender vs Postfix smtp-source: ${COUNT} messages, ${BODY}-byte body, to Postfix smtp-sink on loopback`);
  console.log("connections | postroom msg/s | CPU ms/msg | smtp-source -d msg/s | ratio | smtp-source (1 msg/conn) msg/s | ratio | load average after");
  rows.forEach((r, i) => {
    console.log(
      `${String(r.connections).padStart(11)} | ${r.postroom.toFixed(1).padStart(14)} | ${r.cpuMs.toFixed(2).padStart(10)} | ${r.reused.toFixed(1).padStart(20)} | ${(r.postroom / r.reused).toFixed(3)} | ${r.perConnection.toFixed(1).padStart(30)} | ${(r.postroom / r.perConnection).toFixed(3)} | ${loads[i]}`,
    );
  });
  console.log(
    `postroom 4 vs 1 connections: ${(rows[1]!.postroom / rows[0]!.postroom).toFixed(2)}x; smtp-source -d: ${(rows[1]!.reused / rows[0]!.reused).toFixed(2)}x; smtp-source: ${(rows[1]!.perConnection / rows[0]!.perConnection).toFixed(2)}x`,
  );
} finally {
  sink.stop();
}
process.exit(0);
