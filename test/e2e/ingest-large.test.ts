import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { buildPoller, IngestWorld, POLLER_ENV, POLLER_NODE_ARGS, type PollerProcess } from "../support/ingest-world.js";

const IMAP_USER = "big@acme.test";
const POP3_USER = "bigpop@acme.test";
const RSS_LIMIT = 150 * 1024 * 1024;
let w: IngestWorld;
let poller: PollerProcess;

before(async () => {
  await buildPoller();
  w = await IngestWorld.create("ingest-large", [
    // 10 MB maximum: the 40 MB message is archived raw all the same, and flagged.
    { id: "big", user: IMAP_USER, password: "pw", inbound: { checkIntervalSeconds: 30, maxMessageBytes: 10 * 1024 * 1024 } },
    { id: "bigpop", user: POP3_USER, password: "pw", inbound: { protocol: "pop3", checkIntervalSeconds: 2, pop3LeaveOnServer: false } },
  ]);
  // Measured as production runs it (`pnpm start` in services/imap-poller): compiled JavaScript, no
  // TypeScript compiler in the process, V8's young generation kept small and scavenged as the
  // message streams (--expose-gc), so its buffers are collected as they flow instead of piling up,
  // and glibc told to give freed buffers back to the system.
  poller = w.startPoller("p", POLLER_ENV, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  await w.waitForState("acme", "big", "idle");
  await w.waitForState("acme", "bigpop", "idle");
});
after(async () => {
  await w?.close();
});

/** A ~40 MB email: a text part and a base64 attachment, CRLF line endings. */
function bigEmail(to: string): Buffer {
  const payload = randomBytes(30 * 1024 * 1024).toString("base64").replace(/.{76}/g, "$&\r\n");
  return Buffer.from(
    [
      "From: Big Sender <big@customer.example>",
      `To: ${to}`,
      "Subject: the scans you asked for",
      `Message-ID: <${randomBytes(6).toString("hex")}@customer.example>`,
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="b1"',
      "",
      "--b1",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Please find the scans attached.",
      "--b1",
      'Content-Type: application/octet-stream; name="scans.bin"',
      "Content-Transfer-Encoding: base64",
      'Content-Disposition: attachment; filename="scans.bin"',
      "",
      payload,
      "--b1--",
      "",
    ].join("\r\n"),
  );
}

async function ingestWatchingMemory(user: string, mailbox: string): Promise<void> {
  const raw = bigEmail(user);
  assert.ok(raw.length >= 40 * 1024 * 1024, `${raw.length} bytes`);
  const baseline = await poller.rssBytes();
  let peak = baseline;
  const sampler = setInterval(() => {
    poller.rssBytes().then((r) => (peak = Math.max(peak, r)), () => undefined);
  }, 25);
  try {
    const t0 = Date.now();
    await w.dovecot.appendMessage(user, raw);
    console.log(`${mailbox}: stored in Dovecot in ${Date.now() - t0} ms`);
    await waitFor(async () => (await w.count("SELECT count(*) AS n FROM messages WHERE mailbox = $1", [mailbox])) === 1, {
      timeoutMs: 90_000,
      intervalMs: 250,
      what: () => `the 40 MB message archived\n${w.dump()}`,
    });
  } finally {
    clearInterval(sampler);
  }
  const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
  console.log(`${mailbox}: ${mb(raw.length)} MB message; poller RSS ${mb(baseline)} MB before, peak ${mb(peak)} MB while ingesting (limit ${mb(RSS_LIMIT)} MB)`);
  assert.ok(peak < RSS_LIMIT, `peak RSS ${peak}`);
  const { rows } = await w.pool.query<{ archive_path: string; sha256: string; size: string; oversize: boolean }>(
    "SELECT archive_path, sha256, size, oversize FROM messages WHERE mailbox = $1",
    [mailbox],
  );
  const row = rows[0]!;
  assert.equal(Number(row.size), raw.length);
  assert.equal(row.sha256, createHash("sha256").update(raw).digest("hex"));
  const eml = await readFile(join(row.archive_path, "message.eml"));
  assert.ok(eml.equals(raw), "archived byte for byte");
  if (mailbox === "big") assert.equal(row.oversize, true, "above the mailbox's maximum: archived raw and flagged, not dropped");
}

test("a 40 MB message over IMAP is ingested while the poller stays under 150 MB resident, and flagged as oversize", async () => {
  await ingestWatchingMemory(IMAP_USER, "big");
});

test("a 40 MB message over POP3 is ingested while the poller stays under 150 MB resident", async () => {
  await ingestWatchingMemory(POP3_USER, "bigpop");
});
