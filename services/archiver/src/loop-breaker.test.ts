import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LoopAlert, SendRequested } from "@postroom/contracts";
import { createLogger } from "@postroom/telemetry";
import { waitFor } from "@postroom/testkit";
import { Archiver } from "./archiver.js";
import { Harness } from "./test-harness.js";

let h: Harness;
let second: Archiver;
const alerts: LoopAlert[] = [];
const alertMails: SendRequested[] = [];

before(async () => {
  h = await Harness.create("loopbreak", (c) => {
    c.tenants![0]!.classification = { loopBreaker: { maxMessages: 5, windowMinutes: 10 } };
    c.archive!.sendAlerts = true;
    c.archive!.alertRecipients = ["ops@acme.test"];
  });
  const a = h.nc.subscribe(h.names.subjects.wildcard.loopAlert());
  void (async () => {
    for await (const m of a) alerts.push(LoopAlert.parse(m.json()));
  })();
  const s = h.nc.subscribe(h.names.subjects.wildcard.mailSend());
  void (async () => {
    for await (const m of s) alertMails.push(SendRequested.parse(m.json()));
  })();
  // Two replicas on one durable consumer: the sender's messages are split between them.
  await h.startArchiver();
  second = new Archiver({ nc: h.nc, names: h.names, config: h.config, pool: h.servicePool, logger: createLogger({ service: "archiver-test-2", level: process.env.LOG_LEVEL ?? "warn" }) });
  await second.start();
});

after(async () => {
  await second?.stop();
  await h?.close();
});

const mail = (from: string, n: number) =>
  Buffer.from([`From: Responder <${from}>`, "To: support@acme.test", `Subject: Re: Re: Re: your mail ${n}`, `Message-ID: <loop-${from}-${n}@responder.example>`, "", "Thank you for your mail.", ""].join("\r\n"));

test("more than N messages from one sender within the window are archived, not offered, with one alert — exactly, across two replicas", async () => {
  const at = new Date();
  const keys: string[] = [];
  let uid = 1;
  for (let n = 0; n < 12; n++) keys.push(await h.deliver(mail("bot@responder.example", n), { uid: uid++, receivedAt: at }));
  const other = await h.deliver(mail("ann@customer.example", 0), { uid: uid++, receivedAt: at });
  const confirmed = await waitFor(() => {
    const c = new Map(h.confirmations.map((x) => [x.messageKey, x]));
    return [...keys, other].every((k) => c.has(k)) && c;
  }, { timeoutMs: 30_000, what: "13 confirmations" });
  const bot = keys.map((k) => confirmed.get(k)!);
  assert.equal(bot.filter((c) => c.offer).length, 5, "exactly the first five are offered");
  const held = bot.filter((c) => !c.offer);
  assert.equal(held.length, 7);
  for (const c of held) {
    assert.equal(c.classification, "loop");
    assert.match(c.classificationReason ?? "", /^loop breaker: \d+ messages from bot@responder\.example within 10 minutes \(limit 5\)$/);
    assert.deepEqual(c.flags, { autoReply: false, bounce: false, loop: true });
  }
  assert.equal(confirmed.get(other)!.offer, true, "another sender is not held back");
  const rows = await h.rows<{ offer: boolean; classification: string }>("SELECT offer, classification FROM messages WHERE from_address = 'bot@responder.example'");
  assert.deepEqual([rows.filter((r) => r.offer).length, rows.filter((r) => r.classification === "loop").length], [5, 7], "the rows say the same");

  await waitFor(() => alerts.length >= 1 && alertMails.length >= 1, { timeoutMs: 30_000, what: "the loop alert and its e-mail" });
  assert.equal(alerts.length, 1, "one alert for the episode, not one per message");
  assert.deepEqual([alerts[0]!.sender, alerts[0]!.mailbox, alerts[0]!.maxMessages, alerts[0]!.messages], ["bot@responder.example", "support", 5, 6]);
  assert.equal(alertMails.length, 1);
  assert.deepEqual([alertMails[0]!.kind, alertMails[0]!.to], ["alert", ["ops@acme.test"]]);

  // The loop goes on a little later: still held back, still no second alert.
  const later = new Date(at.getTime() + 5 * 60_000);
  const more = [await h.deliver(mail("bot@responder.example", 100), { uid: uid++, receivedAt: later }), await h.deliver(mail("bot@responder.example", 101), { uid: uid++, receivedAt: later })];
  await waitFor(() => more.every((k) => h.confirmations.some((c) => c.messageKey === k)), { timeoutMs: 20_000, what: "two more confirmations" });
  assert.ok(h.confirmations.filter((c) => more.includes(c.messageKey)).every((c) => !c.offer));
  // After a quiet window the sender's mail is offered again; a new loop would be a new episode, with a new alert.
  const quiet = new Date(at.getTime() + 60 * 60_000);
  const fresh = await h.deliver(mail("bot@responder.example", 200), { uid: uid++, receivedAt: quiet });
  await waitFor(() => h.confirmations.some((c) => c.messageKey === fresh), { timeoutMs: 20_000, what: "the message after the quiet window" });
  assert.equal(h.confirmations.find((c) => c.messageKey === fresh)!.offer, true);
  const episode: string[] = [];
  for (let n = 0; n < 6; n++) episode.push(await h.deliver(mail("bot@responder.example", 300 + n), { uid: uid++, receivedAt: quiet }));
  await waitFor(() => alerts.length === 2, { timeoutMs: 20_000, what: "a second alert for the second episode" });
  await waitFor(() => episode.every((k) => h.confirmations.some((c) => c.messageKey === k)), { timeoutMs: 20_000, what: "the second episode archived" });
  assert.equal(alerts.length, 2);
  const stats = [h.archiver!.stats, second.stats];
  assert.equal(stats.reduce((n, x) => n + x.loopAlerts, 0), 2, "the replicas' counters agree with the alerts");
  assert.equal(stats.reduce((n, x) => n + x.classified.loop, 0), 7 + 2 + 2, "held back as loops: 7, then 2, then 2 of the second episode");
});

test("an auto-responder storm keeps its verdict (it was never offered) but still raises the one alert", async () => {
  const oof = (n: number) =>
    Buffer.from([`From: oof@responder.example`, "To: support@acme.test", "Auto-Submitted: auto-replied", `Subject: Automatic reply ${n}`, `Message-ID: <oof-${n}@responder.example>`, "", "Away.", ""].join("\r\n"));
  const keys: string[] = [];
  for (let n = 0; n < 7; n++) keys.push(await h.deliver(oof(n), { uid: 9000 + n }));
  await waitFor(() => keys.every((k) => h.confirmations.some((c) => c.messageKey === k)), { timeoutMs: 20_000, what: "the storm archived" });
  const mine = h.confirmations.filter((c) => keys.includes(c.messageKey));
  assert.ok(mine.every((c) => c.classification === "auto-reply" && c.classificationReason === "Auto-Submitted: auto-replied"), JSON.stringify(mine.map((c) => [c.classification, c.classificationReason])));
  // (The first five carry offer: true from the archiver; asd-bridge archives them for their verdict.)
  assert.equal(mine.filter((c) => !c.offer).length, 2, "the breaker holds back the two over the limit");
  await waitFor(() => alerts.some((a) => a.sender === "oof@responder.example"), { timeoutMs: 30_000, what: "the storm's alert" });
  assert.equal(alerts.filter((a) => a.sender === "oof@responder.example").length, 1);
});
