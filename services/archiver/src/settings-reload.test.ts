import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { parseConfig } from "@postroom/config";
import { IngestControl, ingestKey } from "@postroom/contracts";
import { openKv, type KV } from "@postroom/nats-kit";
import { queryAudit } from "@postroom/db";
import { waitFor } from "@postroom/testkit";
import { GB } from "./disk-policy.js";
import { Harness } from "./test-harness.js";

// A 30 KiB quota takes one 20 KiB message, not two; the reload raises it to 1 MiB.
let h: Harness;
let control: KV;

before(async () => {
  h = await Harness.create("reload", (c) => {
    c.archive = { ...c.archive!, quotaGb: (30 * 1024) / GB, minFreeBytes: 1024 * 1024 };
  });
  control = await openKv(h.nc, h.names.buckets.control);
  // The refused message is retried every check interval, as in production (15 s there).
  await h.startArchiver({ disk: { checkIntervalMs: 500, rescanIntervalMs: 60_000 } });
});

after(async () => {
  await h?.close();
});

function customer(n: number): Buffer {
  const body = `${"x".repeat(76)}\r\n`.repeat(256); // 20 KiB
  return Buffer.from([`From: ann@customer.example`, `To: support@acme.test`, `Subject: order ${n}`, `Message-ID: <reload-${n}@customer.example>`, "", body].join("\r\n"), "latin1");
}

async function ingestion(): Promise<IngestControl | undefined> {
  const e = await control.get(ingestKey("acme", "support"));
  return e?.value.length ? IngestControl.parse(e.json()) : undefined;
}

test("a larger quota from a reloaded config lifts the pause and archives the waiting message, with the archiver never restarted", async () => {
  await h.deliver(customer(1), { uid: 1 });
  await waitFor(async () => (await h.count()) === 1, { timeoutMs: 20_000, what: "first message archived" });
  await h.deliver(customer(2), { uid: 2 });
  const paused = await waitFor(async () => ((await ingestion())?.paused ? await ingestion() : undefined), { timeoutMs: 20_000, what: "ingestion paused by the quota" });
  assert.match(paused!.reason ?? "", /quota/);
  const running = h.archiver;

  // What SIGHUP does in main.ts: the same file re-read, here with the quota raised.
  const next = parseConfig(JSON.stringify({ ...JSON.parse(JSON.stringify(h.config)), archive: { ...h.config.archive, quotaGb: 1 / 1024 } }));
  await running!.reloadArchiveSettings(next);

  await waitFor(async () => (await ingestion())?.paused === false, { timeoutMs: 30_000, what: "ingestion resumed" });
  await waitFor(async () => (await h.count()) === 2, { timeoutMs: 30_000, what: "the waiting message archived" });
  assert.equal(h.archiver, running, "the same archiver, not a restarted one");

  // The reload is an administrative action in the tenant's audit trail, and so is a failed one.
  await running!.reloadFailed(new Error("tenants[0].mailboxes[0].address: not an e-mail address"));
  const rows = await queryAudit(h.pool, { tenant: "acme", kindPrefix: "config.reload" });
  assert.deepEqual(rows.map((r) => [r.actorKind, r.actor, r.kind]), [["operator", "SIGHUP", "config.reload"], ["operator", "SIGHUP", "config.reload"]]);
  assert.match(String(rows[0]!.detail.failed), /not an e-mail address/);
  const applied = Object.values(rows[1]!.detail.applied as Record<string, { quotaGb: number }>);
  assert.deepEqual(applied.map((a) => a.quotaGb), [1 / 1024], "what was applied");
});
