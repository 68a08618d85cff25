import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { waitFor } from "@postroom/testkit";
import { E2eWorld } from "../support/fixture.js";

let w: E2eWorld;

before(async () => {
  w = await E2eWorld.create("sendrate", (config) => {
    config.tenants[0]!.mailboxes[0]!.smtp!.ratePerMinute = 2;
  });
  await w.system.start(["token-service", "smtp-sender"]);
  const jsm = await jetstreamManager(w.nc);
  // Generous: starting two services through tsx on a loaded two-core machine can take a minute.
  await waitFor(() => jsm.consumers.info(w.names.streams.sendCommands, w.names.consumers.smtpSender()).then(() => true, () => false), {
    timeoutMs: 120_000,
    what: () => `smtp-sender's consumer\n${w.system.dump()}`,
  });
});

after(async () => {
  await w?.close();
});

test("over the per-mailbox rate the extra message waits its turn instead of failing", async () => {
  for (const n of [1, 2, 3]) {
    await w.requestSend({ commandId: `new-rate-${n}`, tenant: "acme", mailbox: "support", kind: "new", to: ["ann@customer.example"], subject: `Update ${n}`, text: "x" });
  }
  const firstTwo = await w.smtp.waitForMessages(2, 20_000);
  await new Promise((r) => setTimeout(r, 5_000));
  assert.equal(w.smtp.messages.length, 2, "the third is held back while two were sent in this minute");
  const [states] = await w.rows<{ failed: string }>("SELECT count(*) FILTER (WHERE state = 'failed') AS failed FROM sends");
  assert.equal(Number(states!.failed), 0, "nothing failed");

  const all = await w.smtp.waitForMessages(3, 90_000);
  const gapMs = all[2]!.receivedAt.getTime() - firstTwo[0]!.receivedAt.getTime();
  // A minute after the first send frees a slot (a little less: the first slot was taken just before its 250).
  assert.ok(gapMs >= 55_000, `third sent ${gapMs} ms after the first`);
  assert.deepEqual(all.map((m) => /Subject: (Update \d)/.exec(m.raw.toString())?.[1]).sort(), ["Update 1", "Update 2", "Update 3"]);
});
