/**
 * Archive throughput, two measurements in one run:
 *
 * 1. the varied test corpus (plain, HTML, multiparts, hostile names, nine charsets, DSN, broken
 *    MIME, one 25 MB attachment) `rounds` times, against the floor any archive must pay: copying
 *    the same .eml files with `cp` (then `sync`) plus one plain INSERT per message;
 * 2. `big` messages of 25 MB each, against `cp` of the same files alone (then `sync`).
 *
 *   node --conditions=source --import tsx bench/archive-throughput.ts [rounds=10] [big=4] [withBig=1]
 *
 * Everything runs on loopback against the machine's NATS and PostgreSQL: a fresh database and
 * NATS namespace, removed at the end. The archiver is fed before it starts, the way imap-poller
 * feeds it (messages up to INLINE_RAW_MAX_BYTES inside mail.received, larger ones through the
 * object store in ~1 MB chunks), so the timing covers archiving only (raw bytes read, SHA-256,
 * parse in the worker pool, parts and meta.json, fsync, rename, the batch's transaction, the
 * mail.archived publishes).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { Archiver } from "@postroom/archiver";
import { parseConfig } from "@postroom/config";
import { INLINE_RAW_MAX_BYTES, messageKey, names as namesOf, streamDefinitions, type MailReceived, type SourceKey } from "@postroom/contracts";
import { createPool, migrate } from "@postroom/db";
import { connectNats, ensureStreams, jetStreamOf, openObjectStore, PublishWindow } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import { buildMailCorpus, cleanupNamespace, createTestDatabase, natsUrl, tempDir, testNamespace } from "@postroom/testkit";

const run = promisify(execFile);
const rounds = Math.max(1, Math.min(30, Number(process.argv[2] ?? 10)));
const bigCount = Math.max(1, Math.min(10, Number(process.argv[3] ?? 4)));
// A fourth argument of 0 leaves the 25 MB attachment out of the varied corpus (small mail only).
const corpus = process.argv[4] === "0" ? buildMailCorpus({ bigAttachmentBytes: 0 }) : buildMailCorpus();
const messages = Array.from({ length: rounds }, (_, r) => corpus.map((m) => Buffer.concat([Buffer.from(`X-Bench-Round: ${r}\r\n`), m.raw]))).flat();
const totalBytes = messages.reduce((n, m) => n + m.length, 0);
// The corpus's 25 MB message, copied `bigCount` times (each its own message).
const biggest = corpus.reduce((a, b) => (b.raw.length > a.raw.length ? b : a));
const bigs = Array.from({ length: bigCount }, (_, r) => Buffer.concat([Buffer.from(`X-Bench-Big: ${r}\r\n`), biggest.raw]));
const bigBytes = bigs.reduce((n, m) => n + m.length, 0);
const MB = 1024 * 1024;

const dir = tempDir("bench-archive");
const db = await createTestDatabase("bencharch");
const ns = testNamespace("bencharch");
const names = namesOf(ns);
const nc = await connectNats({ url: natsUrl(), name: "bench-archive" });
const pool = createPool(db.url, { max: 5 });

try {
  await migrate(pool);

  // Baseline: the same .eml files copied with cp (one invocation, all files), then one plain
  // INSERT per message, each its own transaction as the archiver's are.
  const src = join(dir.path, "src");
  const dst = join(dir.path, "cp");
  await mkdir(src, { recursive: true });
  await mkdir(dst, { recursive: true });
  const files: string[] = [];
  for (const [i, m] of messages.entries()) {
    const f = join(src, `${i}.eml`);
    await writeFile(f, m);
    files.push(f);
  }
  await pool.query("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, k text NOT NULL, size bigint NOT NULL)");
  await run("sync");
  const b0 = process.hrtime.bigint();
  await run("cp", [...files, dst]);
  // cp does not fsync; sync makes the baseline as durable as the archiver's fsynced writes.
  await run("sync");
  for (const [i, m] of messages.entries()) await pool.query("INSERT INTO bench_plain (k, size) VALUES ($1, $2)", [`k${i}`, m.length]);
  const baselineS = Number(process.hrtime.bigint() - b0) / 1e9;

  // Baseline 2: the 25 MB messages copied with cp alone, then sync.
  const bigSrc = join(dir.path, "big-src");
  const bigDst = join(dir.path, "big-cp");
  await mkdir(bigSrc, { recursive: true });
  await mkdir(bigDst, { recursive: true });
  const bigFiles: string[] = [];
  for (const [i, m] of bigs.entries()) {
    const f = join(bigSrc, `${i}.eml`);
    await writeFile(f, m);
    bigFiles.push(f);
  }
  await run("sync");
  const c0 = process.hrtime.bigint();
  await run("cp", [...bigFiles, bigDst]);
  await run("sync");
  const bigCpS = Number(process.hrtime.bigint() - c0) / 1e9;

  const config = parseConfig(
    JSON.stringify({
      version: 1,
      nats: { url: natsUrl(), namespace: ns },
      database: { url: db.url },
      archive: { path: join(dir.path, "archive") },
      // Two tenants, so each phase has an archiver (and a durable consumer) of its own.
      tenants: [
        { id: "acme", mailboxes: [{ id: "support", address: "support@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", tls: "none" }, auth: { type: "password", password: "env:UNUSED" } }] },
        { id: "big", mailboxes: [{ id: "big", address: "big@acme.test", inbound: { protocol: "imap", host: "127.0.0.1", tls: "none" }, auth: { type: "password", password: "env:UNUSED" } }] },
      ],
    }),
  );
  await ensureStreams(nc, streamDefinitions(names));
  const raw = await openObjectStore(nc, names.buckets.rawMail);
  const js = jetStreamOf(nc);
  const window = new PublishWindow({ js });
  /** Feeds `list` as imap-poller would, then times one archiver from start to the last row. */
  const archive = async (tenant: string, mailbox: string, list: Buffer[]) => {
    for (const [i, m] of list.entries()) {
      const source: SourceKey = { protocol: "imap", tenant, mailbox, folder: "INBOX", uidValidity: 1, uid: i + 1 };
      const key = messageKey(source);
      const inline = m.length <= INLINE_RAW_MAX_BYTES;
      if (!inline) await raw.put({ name: key, options: { max_chunk_size: 1000 * 1024 } }, Readable.toWeb(Readable.from([m])) as ReadableStream<Uint8Array>);
      const event: MailReceived = {
        version: "v1",
        messageKey: key,
        source,
        raw: { bucket: names.buckets.rawMail, name: key, size: m.length, sha256: createHash("sha256").update(m).digest("hex") },
        receivedAt: new Date().toISOString(),
        fetchedAt: new Date().toISOString(),
        offer: false,
        oversize: false,
        ...(inline ? { rawInline: m.toString("base64") } : {}),
      };
      await window.send(names.subjects.mailReceived(tenant, mailbox), event, { msgId: key });
    }
    await window.flush();
    await run("sync");
    const archiver = new Archiver({ nc, names, config, pool, tenant, logger: createLogger({ service: "bench", level: "error" }) });
    const a0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    await archiver.start();
    const started = Number(process.hrtime.bigint() - a0) / 1e9;
    for (;;) {
      const n = Number((await pool.query<{ n: string }>("SELECT count(*) AS n FROM messages WHERE tenant = $1", [tenant])).rows[0]!.n);
      if (n === list.length) break;
      if (Number(process.hrtime.bigint() - a0) / 1e9 > 900) throw new Error(`timed out with ${n} of ${list.length} archived`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const seconds = Number(process.hrtime.bigint() - a0) / 1e9;
    const cpu = process.cpuUsage(c0);
    await archiver.stop();
    return { seconds, started, cpuS: (cpu.user + cpu.system) / 1e6, stats: archiver.stats };
  };
  const varied = await archive("acme", "support", messages);
  const archiveS = varied.seconds;
  const big = await archive("big", "big", bigs);
  const { stdout: load } = await run("uptime");

  const line = (what: string, s: number) =>
    `${what.padEnd(34)} ${(messages.length / s).toFixed(1).padStart(8)} msg/s ${(totalBytes / MB / s).toFixed(1).padStart(8)} MB/s ${s.toFixed(2).padStart(8)} s`;
  console.log(`archive throughput: ${messages.length} messages (${rounds} x ${corpus.length}-message corpus), ${(totalBytes / MB).toFixed(1)} MB, one run`);
  console.log(line("postroom archiver", archiveS));
  console.log(line("cp + one plain INSERT per message", baselineS));
  console.log(`ratio archiver / baseline: ${(baselineS / archiveS).toFixed(3)} (1.0 = as fast as cp + INSERT; ${(archiveS / baselineS).toFixed(1)}x the time)`);
  console.log(`parse errors ${varied.stats.parseErrors}, parse timeouts ${varied.stats.parseTimeouts}; archiver start ${varied.started.toFixed(2)} s of it, main-thread CPU ${varied.cpuS.toFixed(1)} s (parser workers included)`);
  const bigLine = (what: string, s: number) => `${what.padEnd(34)} ${(bigs.length / s).toFixed(2).padStart(8)} msg/s ${(bigBytes / MB / s).toFixed(1).padStart(8)} MB/s ${s.toFixed(2).padStart(8)} s`;
  console.log(`25 MB messages: ${bigs.length} x ${(biggest.raw.length / MB).toFixed(1)} MB, same run`);
  console.log(bigLine("postroom archiver", big.seconds));
  console.log(bigLine("cp alone (+ sync)", bigCpS));
  console.log(`ratio archiver / cp: ${(bigCpS / big.seconds).toFixed(3)} (archiver start ${big.started.toFixed(2)} s of it, CPU ${big.cpuS.toFixed(1)} s)`);
  console.log(`load: ${load.trim()}`);
} finally {
  await nc.drain().catch(() => undefined);
  await pool.end().catch(() => undefined);
  await cleanupNamespace(natsUrl(), ns).catch(() => undefined);
  await db.drop().catch(() => undefined);
  await dir.remove();
}
