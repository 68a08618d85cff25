/**
 * Backlog ingest rate: 5,000 varied messages (the testkit corpus cycled — charsets, multiparts,
 * hostile names, DSNs, broken MIME — with 143 one-megabyte attachments; about 240 MB) sitting in
 * one Dovecot mailbox, ingested by Postroom from Dovecot to archived (imap-poller → object store →
 * archiver → disk + PostgreSQL, every message fsynced) against `mbsync` downloading the same
 * mailbox to a Maildir (default per-message fsync), in the same run on the same machine.
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
const w = await IngestWorld.create("bench-backlog", [
  { id: "backlog", user: USER, password: PASSWORD, inbound: { checkIntervalSeconds: 60, firstStart: "import-history", afterImport: { action: "none" } } },
]);
try {
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

  // Postroom: a poller on the same mailbox with "import-history" (archive all, offer none).
  const p0 = Date.now();
  const poller = w.startPoller("bench", {}, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  let firstAt = 0;
  let publishedAt = 0;
  for (;;) {
    if (publishedAt === 0 && poller.count("message published") >= COUNT) publishedAt = Date.now();
    const n = await w.count("SELECT count(*) AS n FROM messages");
    if (n > 0 && firstAt === 0) firstAt = Date.now();
    if (n >= COUNT) break;
    if (Date.now() - p0 > 15 * 60_000) throw new Error(`only ${n} of ${COUNT} archived after 15 minutes`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const postroomS = (Date.now() - p0) / 1000;
  const steadyS = (Date.now() - firstAt) / 1000;
  await poller.kill();

  const rate = (s: number) => (COUNT / s).toFixed(0);
  console.log(`mbsync → Maildir (fsync per message): ${fetched} files in ${mbsyncS.toFixed(1)} s = ${rate(mbsyncS)} msg/s, ${(bytes / MB / mbsyncS).toFixed(1)} MB/s`);
  console.log(`Postroom Dovecot → archived: ${COUNT} in ${postroomS.toFixed(1)} s from process start = ${rate(postroomS)} msg/s (${rate(steadyS)} msg/s from the first archived message), ${(bytes / MB / postroomS).toFixed(1)} MB/s`);
  if (publishedAt) console.log(`  of which imap-poller had published all ${COUNT} (raw bytes in the object store, mail.received sent) after ${((publishedAt - p0) / 1000).toFixed(1)} s = ${rate((publishedAt - p0) / 1000)} msg/s`);
  console.log(`ratio Postroom / mbsync: ${(mbsyncS / postroomS).toFixed(3)} (from first archived: ${(mbsyncS / steadyS).toFixed(3)})`);
} finally {
  await w.close();
}
