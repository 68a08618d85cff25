/**
 * Backlog ingest rate: 5,000 varied messages (the testkit corpus cycled — charsets, multiparts,
 * hostile names, DSNs, broken MIME — with 143 one-megabyte attachments; about 240 MB) sitting in
 * one Dovecot mailbox, ingested by Postroom from Dovecot to archived and offered (imap-poller →
 * mail.received → archiver → disk + PostgreSQL, every message fsynced → asd-bridge → a session
 * offered to the built-in ACD for every message the classifier lets through) against `mbsync`
 * downloading the same mailbox to a Maildir (default per-message fsync), in the same run on the
 * same machine. The backlog builds up while the poller is stopped (an outage), so it is new mail:
 * offered, not history. The loop breaker is set out of reach (the cycled corpus sends ~140
 * messages per sender).
 *
 *   node --conditions=source --import tsx bench/ingest-backlog.ts [messages=5000]
 *
 * Loopback only; everything it starts is stopped and removed at the end.
 */
import { execFile } from "node:child_process";
import { writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildMailCorpus } from "@postroom/testkit";
import { buildPoller, IngestWorld, POLLER_NODE_ARGS } from "../test/support/ingest-world.js";

const run = promisify(execFile);
const COUNT = Math.max(100, Math.min(5000, Number(process.argv[2] ?? 5000)));
const USER = "backlog@acme.test";
const PASSWORD = "bench-pw";
const MB = 1024 * 1024;

const corpus = buildMailCorpus({ bigAttachmentBytes: 1024 * 1024 });
const messages = Array.from({ length: COUNT }, (_, i) => Buffer.concat([Buffer.from(`X-Bench-Seq: ${i}\r\n`), corpus[i % corpus.length]!.raw]));
const bytes = messages.reduce((n, m) => n + m.length, 0);
const attachments = corpus.reduce((n, m) => n + (m.name.match(/attachment|image|hostile|duplicate|unicode|no-filename|calendar|forwarded/) ? 1 : 0), 0);

await buildPoller();
const w = await IngestWorld.create(
  "bench-backlog",
  [{ id: "backlog", user: USER, password: PASSWORD, inbound: { checkIntervalSeconds: 60, firstStart: "from-now", afterImport: { action: "none" } } }],
  {
    services: ["token-service", "archiver", "asd-bridge"],
    tweak: (c) => {
      for (const t of c.tenants ?? []) (t as { classification?: unknown }).classification = { loopBreaker: { maxMessages: 1_000_000, windowMinutes: 1 } };
    },
  },
);
try {
  // A first start on the empty mailbox ("from-now" at UIDNEXT 1), then stopped: what follows is a backlog of new mail.
  const first = w.startPoller("bench-first", {}, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  await w.waitForState("acme", "backlog", "idle", 120_000);
  await first.kill();
  const f0 = Date.now();
  await w.dovecot.withImap(USER, async (client) => {
    for (const m of messages) await client.append("INBOX", m);
  });
  console.log(`mailbox filled: ${COUNT} messages, ${(bytes / MB).toFixed(0)} MB (corpus of ${corpus.length}, ~${Math.round((attachments * COUNT) / corpus.length)} with attachments) in ${((Date.now() - f0) / 1000).toFixed(1)} s`);

  // mbsync: the durable reference (default: fsync per message).
  const maildir = join(w.dir.path, "maildir");
  await mkdir(maildir, { recursive: true });
  const rc = join(w.dir.path, "mbsyncrc");
  await writeFile(
    rc,
    `IMAPAccount src
Host ${w.dovecot.info.host}
Port ${w.dovecot.info.imapPort}
User ${USER}
Pass ${PASSWORD}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account src

MaildirStore local
Path ${maildir}/
Inbox ${maildir}/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Sync Pull
Create Near
SyncState ${w.dir.path}/mbsync-state/
`,
  );
  await mkdir(join(w.dir.path, "mbsync-state"), { recursive: true });
  const m0 = process.hrtime.bigint();
  await run("mbsync", ["-q", "-c", rc, "bench"], { maxBuffer: 16 * MB });
  const mbsyncS = Number(process.hrtime.bigint() - m0) / 1e9;
  const fetched = (await run("sh", ["-c", `find ${maildir}/INBOX -type f -path '*/cur/*' -o -type f -path '*/new/*' | wc -l`])).stdout.trim();

  // Postroom: a poller on the same mailbox; done when every message is archived and every one
  // the classifier offers has its session offered.
  const p0 = Date.now();
  const poller = w.startPoller("bench", {}, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  let firstAt = 0;
  let publishedAt = 0;
  let archivedAt = 0;
  let offered = 0;
  let offerable = 0;
  for (;;) {
    if (publishedAt === 0 && poller.count("message published") >= COUNT) publishedAt = Date.now();
    const n = await w.count("SELECT count(*) AS n FROM messages");
    if (n > 0 && firstAt === 0) firstAt = Date.now();
    if (n >= COUNT && archivedAt === 0) archivedAt = Date.now();
    if (n >= COUNT) {
      // What asd-bridge offers with the default classification actions: human (offer) and bulk
      // (flag, offered with a flag); auto-replies, bounces and loops are archived only.
      offerable = await w.count("SELECT count(*) AS n FROM messages WHERE offer AND classification IN ('human', 'bulk')");
      offered = await w.count("SELECT count(*) AS n FROM sessions WHERE offered_at IS NOT NULL");
      if (offered >= offerable) break;
    }
    if (Date.now() - p0 > 20 * 60_000) throw new Error(`only ${n} of ${COUNT} archived, ${offered} offered after 20 minutes`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const postroomS = (Date.now() - p0) / 1000;
  const steadyS = (Date.now() - firstAt) / 1000;
  await poller.kill();
  const { stdout: load } = await run("uptime");

  const rate = (s: number) => (COUNT / s).toFixed(0);
  console.log(`mbsync → Maildir (fsync per message): ${fetched} files in ${mbsyncS.toFixed(1)} s = ${rate(mbsyncS)} msg/s, ${(bytes / MB / mbsyncS).toFixed(1)} MB/s`);
  console.log(`Postroom Dovecot → archived + rows + ${offered} sessions offered (of ${offerable} the classifier offers): ${COUNT} in ${postroomS.toFixed(1)} s from process start = ${rate(postroomS)} msg/s (${rate(steadyS)} msg/s from the first archived message), ${(bytes / MB / postroomS).toFixed(1)} MB/s`);
  console.log(`  all archived after ${((archivedAt - p0) / 1000).toFixed(1)} s`);
  if (publishedAt) console.log(`  of which imap-poller had published all ${COUNT} (mail.received stored for each) after ${((publishedAt - p0) / 1000).toFixed(1)} s = ${rate((publishedAt - p0) / 1000)} msg/s`);
  console.log(`ratio Postroom / mbsync: ${(mbsyncS / postroomS).toFixed(3)} (from first archived: ${(mbsyncS / steadyS).toFixed(3)})`);
  console.log(`load: ${load.trim()}`);
} finally {
  await w.close();
}
