import assert from "node:assert/strict";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { DiskAlert, IngestControl, ingestKey, SendRequested } from "@postroom/contracts";
import { jetstreamManager } from "@nats-io/jetstream";
import { openKv, type KV } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { GB } from "./disk-policy.js";
import { Harness } from "./test-harness.js";

// 100 KiB quota, warn with half of it left; each message below is about 20 KiB on disk.
const QUOTA_BYTES = 100 * 1024;

let h: Harness;
let control: KV;
const alerts: DiskAlert[] = [];
const commands: SendRequested[] = [];

before(async () => {
  h = await Harness.create("diskguard", (c) => {
    c.archive = { ...c.archive!, quotaGb: QUOTA_BYTES / GB, warnPercentLeft: 50, sendAlerts: true, alertRecipients: ["ops@acme.test"] };
  });
  const a = h.nc.subscribe(h.names.subjects.wildcard.diskAlert());
  void (async () => {
    for await (const m of a) alerts.push(DiskAlert.parse(m.json()));
  })();
  const s = h.nc.subscribe(h.names.subjects.wildcard.mailSend());
  void (async () => {
    for await (const m of s) commands.push(SendRequested.parse(m.json()));
  })();
  control = await openKv(h.nc, h.names.buckets.control);
  await h.startArchiver({ disk: { checkIntervalMs: 300, rescanIntervalMs: 300 } });
});

after(async () => {
  await h?.close();
});

function customer(n: number): Buffer {
  const body = `${"x".repeat(76)}\r\n`.repeat(256); // 20 KiB
  return Buffer.from(
    [`From: ann@customer.example`, `To: support@acme.test`, `Subject: order ${n}`, `Message-ID: <quota-${n}@customer.example>`, "Content-Type: text/plain", "", body].join("\r\n"),
    "latin1",
  );
}

async function paused(): Promise<IngestControl | undefined> {
  const e = await control.get(ingestKey("acme", "support"));
  return e?.value.length ? IngestControl.parse(e.json()) : undefined;
}

test("crossing the warning threshold alerts once; a message past the quota pauses ingestion unacknowledged; freeing space resumes it", async () => {
  assert.equal((await paused())?.paused, false, "the archiver states at start that ingestion may run");
  const keys: string[] = [];
  for (let n = 1; n <= 3; n++) {
    keys.push(await h.deliver(customer(n), { uid: n }));
    await waitFor(async () => (await h.count()) === n, { timeoutMs: 20_000, what: `message ${n} archived` });
  }
  const warning = await waitFor(() => alerts.find((a) => a.level === "warning"), { timeoutMs: 30_000, what: "warning alert event" });
  assert.ok(warning.percentLeft <= 50 && warning.percentLeft > 0, `${warning.percentLeft}% left`);
  assert.equal(warning.quotaBytes, QUOTA_BYTES);
  const mail = await waitFor(() => commands.find((c) => c.kind === "alert"), { timeoutMs: 30_000, what: "alert e-mail command" });
  assert.deepEqual(mail.to, ["ops@acme.test"]);
  assert.match(mail.subject ?? "", /warning/);

  // A fourth message still fits: no second warning for the same crossing.
  keys.push(await h.deliver(customer(4), { uid: 4 }));
  await waitFor(async () => (await h.count()) === 4, { timeoutMs: 20_000, what: "message 4 archived" });
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(alerts.filter((a) => a.level === "warning").length, 1);
  assert.equal(commands.filter((c) => c.kind === "alert").length, 1);

  // The fifth does not fit.
  keys.push(await h.deliver(customer(5), { uid: 5 }));
  const pause = await waitFor(async () => {
    const p = await paused();
    return p?.paused ? p : undefined;
  }, { timeoutMs: 20_000, what: "ingestion paused in KV" });
  assert.match(pause.reason ?? "", /quota of 100\.0 KiB reached/);
  await waitFor(() => alerts.find((a) => a.level === "critical"), { timeoutMs: 30_000, what: "critical alert" });
  assert.equal(await h.count(), 4, "the fifth is not archived");
  assert.equal(h.confirmations.some((c) => c.messageKey === keys[4]), false, "nor confirmed");
  assert.deepEqual(await readdir(join(h.archiveRoot, ".tmp")), [], "no staged leftovers");
  const jsm = await jetstreamManager(h.nc);
  const info = await jsm.consumers.info(h.names.streams.mail, h.names.consumers.archiverReceived());
  assert.ok(info.ack_floor.stream_seq < info.delivered.stream_seq, "its delivery was never acknowledged");

  // An operator frees space (here: removes the first message's folder); the guard notices by itself.
  const [first] = await h.rows<{ archive_path: string }>("SELECT archive_path FROM messages WHERE message_key = $1", [keys[0]]);
  await rm(first!.archive_path, { recursive: true, force: true });
  await waitFor(async () => (await paused())?.paused === false, { timeoutMs: 20_000, what: "ingestion resumed in KV" });
  await waitFor(async () => (await h.count()) === 5, { timeoutMs: 30_000, what: "the fifth archived after the pause" });
  // The row commits before mail.archived is published, so the confirmation may trail it.
  await waitFor(() => h.confirmations.some((c) => c.messageKey === keys[4]), { timeoutMs: 20_000, what: "the fifth confirmed" });
  assert.equal(commands.filter((c) => c.kind === "alert" && /warning/.test(c.subject ?? "")).length, 1, "still one warning e-mail");
  assert.ok(h.archiver!.stats.refusedFull >= 1);
  const disk = h.archiver!.stats.disks()[0]!;
  assert.equal(disk.quotaBytes, QUOTA_BYTES);
  assert.equal(disk.paused, false);
});
