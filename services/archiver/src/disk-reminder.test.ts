import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DiskAlert } from "@postroom/contracts";
import { waitFor } from "@postroom/testkit";
import { GB } from "./disk-policy.js";
import { Harness } from "./test-harness.js";

// A 30 KiB quota with a warning at 50% left: one 20 KiB message crosses it and the archive stays
// there. Reminders every 1.5 s instead of daily, so the test can see one.
const REMINDER_MS = 1500;
let h: Harness;
const alerts: { at: number; alert: DiskAlert }[] = [];

before(async () => {
  h = await Harness.create("diskremind", (c) => {
    c.archive = { ...c.archive!, quotaGb: (30 * 1024) / GB, warnPercentLeft: 50 };
  });
  const sub = h.nc.subscribe(h.names.subjects.wildcard.diskAlert());
  void (async () => {
    for await (const m of sub) alerts.push({ at: Date.now(), alert: DiskAlert.parse(m.json()) });
  })();
  await h.startArchiver({ disk: { checkIntervalMs: 200, reminderMs: REMINDER_MS } });
});

after(async () => {
  await h?.close();
});

const levels = () => alerts.map((a) => a.alert.level);

test("a warning that stands is repeated as a reminder after the reminder interval, and a restart raises no second warning", async () => {
  const body = `${"x".repeat(76)}\r\n`.repeat(256);
  await h.deliver(Buffer.from(`Subject: big\r\nMessage-ID: <big@customer.example>\r\n\r\n${body}`), { uid: 1 });
  const warning = await waitFor(() => alerts.find((a) => a.alert.level === "warning"), { timeoutMs: 20_000, what: "warning" });
  const reminder = await waitFor(() => alerts.find((a) => a.alert.level === "reminder"), { timeoutMs: 20_000, what: "reminder" });
  assert.ok(reminder.at - warning.at >= REMINDER_MS - 100, `reminder ${reminder.at - warning.at} ms after the warning`);
  assert.deepEqual(levels().slice(0, 2), ["warning", "reminder"]);

  // The alert state is in PostgreSQL: a restarted archiver knows the warning stands.
  await h.stopArchiver();
  const before = alerts.length;
  await h.startArchiver({ disk: { checkIntervalMs: 200, reminderMs: 60_000 } });
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(levels().slice(before), [], "no new warning (nor reminder) after the restart");
  const [state] = await h.rows<{ level: string }>("SELECT level FROM archive_disk_state WHERE archive_path = $1", [h.archiveRoot]);
  assert.equal(state!.level, "warning");
});
