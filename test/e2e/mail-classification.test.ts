import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LoopAlert } from "@postroom/contracts";
import { buildClassifiedCorpus, CORPUS_MAILBOX, waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { COLLEAGUE, CUSTOMER, SendWorld, SUPPORT } from "../support/send-world.js";

/**
 * What Postroom concludes about mail, through the whole system: Dovecot → imap-poller → archiver
 * → asd-bridge, with Postfix delivering our replies and the bounces and answers they cause.
 */

const MAX = 3;
let w: SendWorld;
const alerts: LoopAlert[] = [];

before(async () => {
  w = await SendWorld.create("classify", {
    tweak: (c) => {
      c.tenants![0]!.mailboxes![0]!.aliases = CORPUS_MAILBOX.aliases;
      c.tenants![0]!.classification = { loopBreaker: { maxMessages: MAX, windowMinutes: 10 } };
    },
  });
  const sub = w.nc.subscribe(w.names.subjects.wildcard.loopAlert());
  void (async () => {
    for await (const m of sub) alerts.push(LoopAlert.parse(m.json()));
  })();
  await w.system.start();
  await w.mailboxReady();
});

after(async () => {
  await w?.close();
});

type Row = {
  id: string; message_key: string; classification: string; classification_reason: string | null; is_auto_reply: boolean; is_bounce: boolean; is_loop: boolean;
  date_header: Date | null; date_raw: string | null; bounce_of: string | null; bounce_status: string | null; bounce_diagnostic: string | null; conversation_id: string;
};

const keyOf = (a: { uid: number; uidValidity: number | bigint }) => `acme/support/imap/INBOX/${a.uidValidity}/${a.uid}`;

async function rowOf(key: string, what: string): Promise<Row> {
  const [row] = await waitFor(async () => {
    const r = await w.rows<Row>("SELECT * FROM messages WHERE message_key = $1", [key]);
    return r.length ? r : undefined;
  }, { timeoutMs: 30_000, what: () => `${what} archived\n${w.system.dump()}` });
  return row!;
}

/** Waits until asd-bridge has handled the message's mail.archived (offered it, or logged that it did not). */
async function sessionsOf(messageRow: string): Promise<{ warnings: string[] }[]> {
  return w.rows<{ warnings: string[] }>("SELECT warnings FROM sessions WHERE message_id = $1", [messageRow]);
}

test("every message of a 151-message corpus gets the verdict, flags, addresses, date and attachment names the generator wrote", async () => {
  const corpus = buildClassifiedCorpus();
  assert.ok(corpus.length >= 150, `${corpus.length} messages`);
  const keys = new Map<string, string>();
  for (const m of corpus) keys.set(m.name, keyOf(await w.dovecot.appendMessage(SUPPORT, m.raw)));
  const offered = corpus.filter((m) => m.expect.offered).length;
  await waitFor(async () => (await w.rows<{ n: string }>("SELECT count(*) AS n FROM messages WHERE message_key = ANY($1)", [[...keys.values()]]))[0]!.n === String(corpus.length), {
    timeoutMs: 60_000,
    intervalMs: 250,
    what: () => `${corpus.length} archived\n${w.system.dump()}`,
  });
  await waitFor(async () => (await w.rows<{ n: string }>("SELECT count(*) AS n FROM sessions"))[0]!.n === String(offered), {
    timeoutMs: 30_000,
    what: () => `${offered} sessions\n${w.system.dump()}`,
  });
  const wrong: string[] = [];
  for (const m of corpus) {
    const e = m.expect;
    const [row] = await w.rows<Row>("SELECT * FROM messages WHERE message_key = $1", [keys.get(m.name)]);
    const got = (what: string, actual: unknown, want: unknown) => {
      if (JSON.stringify(actual) !== JSON.stringify(want)) wrong.push(`${m.name}: ${what} ${JSON.stringify(actual)}, want ${JSON.stringify(want)}`);
    };
    got("classification", row!.classification, e.classification);
    if (e.reason === null) got("reason", row!.classification_reason, null);
    else if (!(row!.classification_reason ?? "").includes(e.reason)) got("reason", row!.classification_reason, `…${e.reason}…`);
    got("flags", [row!.is_auto_reply, row!.is_bounce, row!.is_loop], [e.classification === "auto-reply", e.classification === "bounce", e.classification === "loop"]);
    got("date", row!.date_header?.toISOString() ?? null, e.date);
    got("date_raw", row!.date_raw, e.dateRaw);
    const addresses = await w.rows<{ role: string; address: string }>("SELECT role, address FROM addresses WHERE message_id = $1 AND role IN ('from', 'to', 'cc') ORDER BY role, address", [row!.id]);
    got("from", addresses.filter((a) => a.role === "from").map((a) => a.address), [e.from]);
    got("to", addresses.filter((a) => a.role === "to").map((a) => a.address), [...e.to].sort());
    got("cc", addresses.filter((a) => a.role === "cc").map((a) => a.address), [...e.cc].sort());
    const parts = await w.rows<{ original_name: string | null; stored_name: string }>("SELECT original_name, stored_name FROM attachments WHERE message_id = $1 ORDER BY part_index", [row!.id]);
    got("attachments", parts.map((p) => ({ original: p.original_name, stored: p.stored_name })), e.attachments);
    if (e.bounceOf !== undefined) got("bounce", [row!.bounce_of, row!.bounce_status, row!.bounce_diagnostic], [e.bounceOf, e.bounceStatus, e.bounceDiagnostic]);
    else got("bounce_of", row!.bounce_of, null);
    const sessions = await sessionsOf(row!.id);
    got("offered", sessions.length === 1, e.offered);
    if (e.offered) got("flag shown with the session", sessions[0]!.warnings.some((x) => x.startsWith("Mailing list or bulk mail: ")), e.flagged);
  }
  assert.deepEqual(wrong, []);
});

test("mail from the mailbox itself and the echo of Postroom's own reply are archived, never offered", async () => {
  // Sent by the mailbox's own account, to itself.
  await w.sendAs(SUPPORT, { to: SUPPORT, subject: "Note to self", text: "Remember the invoices." });
  // An agent answers a customer; the customer's address forwards everything back to us (same bytes).
  const original = await w.archivedOriginal(customerEmail({ from: CUSTOMER, to: SUPPORT, subject: "Forwarding test", messageId: "<fwd-original@customer.test>" }));
  await w.requestSend({ commandId: "echo-reply-0001", kind: "reply", original, to: [CUSTOMER], text: "Here is the answer." });
  const [reply] = await w.waitForMail(CUSTOMER, (raw) => raw.includes("Here is the answer."));
  assert.match(reply!.toString("latin1"), /^X-Postroom-Loop: acme\/support\r$/m, "the reply carries the mailbox's loop stamp");
  const echo = keyOf(await w.dovecot.appendMessage(SUPPORT, reply!));

  const self = await waitFor(async () => {
    const r = await w.rows<Row>("SELECT m.* FROM messages m WHERE subject = 'Note to self' AND direction = 'inbound'");
    return r[0];
  }, { timeoutMs: 30_000, what: () => `note to self archived\n${w.system.dump()}` });
  const echoed = await rowOf(echo, "the echo");
  assert.deepEqual([self.classification, self.classification_reason], ["loop", "From is the mailbox's own address support@acme.test"]);
  assert.deepEqual([echoed.classification, echoed.classification_reason], ["loop", "X-Postroom-Loop: acme/support (Postroom's own message came back)"]);
  // The original was offered; the two loops never are (asd-bridge has seen both: the audit says archived).
  assert.equal((await sessionsOf((await rowOf(original, "original")).id)).length, 1);
  assert.equal((await sessionsOf(self.id)).length, 0);
  assert.equal((await sessionsOf(echoed.id)).length, 0);
});

test("a DSN that arrives later for one of Postroom's replies is classified bounce and linked to that reply", async () => {
  const original = await w.archivedOriginal(customerEmail({ from: CUSTOMER, to: SUPPORT, subject: "Bounce me", messageId: "<bounce-original@customer.test>" }));
  // Postfix accepts the address (nothing is refused at RCPT time); Dovecot's LMTP does not know
  // the user, so Postfix bounces asynchronously to our envelope sender, the support mailbox.
  await w.requestSend({ commandId: "bounce-reply-0001", kind: "reply", original, to: ["nobody@customer.test"], text: "This will bounce." });
  const [send] = await waitFor(async () => {
    const r = await w.rows<{ state: string; rfc_message_id: string }>("SELECT state, rfc_message_id FROM sends WHERE command_id = 'bounce-reply-0001' AND state = 'sent'");
    return r.length ? r : undefined;
  }, { timeoutMs: 30_000, what: () => `reply sent\n${w.system.dump()}` });
  const dsn = await waitFor(async () => {
    const r = await w.rows<Row>("SELECT * FROM messages WHERE direction = 'inbound' AND bounce_of = $1", [send!.rfc_message_id]);
    return r[0];
  }, { timeoutMs: 40_000, what: () => `the DSN archived and linked\n${w.system.dump()}` });
  assert.equal(dsn.classification, "bounce");
  assert.equal(dsn.bounce_status, "5.1.1");
  assert.match(dsn.bounce_diagnostic ?? "", /550 5\.1\.1/);
  const [reply] = await waitFor(async () => {
    const r = await w.rows<{ conversation_id: string }>("SELECT conversation_id FROM messages WHERE direction = 'outbound' AND rfc_message_id = $1", [send!.rfc_message_id]);
    return r.length ? r : undefined;
  }, { timeoutMs: 20_000, what: "the reply archived" });
  assert.equal(dsn.conversation_id, reply!.conversation_id, "the DSN is in the reply's conversation");
  assert.equal((await sessionsOf(dsn.id)).length, 0, "bounces are not offered");
});

test(`a looping auto-responder that answers every mail it gets is offered ${MAX} times, then held back with one alert`, async () => {
  // The responder answers every message in its mailbox, to us and to itself (a badly set up
  // auto-responder copying itself): each answer makes the next one, without end.
  await w.requestSend({ commandId: "responder-0001", kind: "new", to: [COLLEAGUE], subject: "Your ticket", text: "We are on it." });
  const answers = MAX + 3;
  for (let n = 1; n <= answers; n++) {
    await w.waitForMail(COLLEAGUE, () => true, n);
    await w.sendAs(COLLEAGUE, { to: `${SUPPORT}, ${COLLEAGUE}`, subject: `Re: ${"Re: ".repeat(n - 1)}Your ticket`, text: `Thank you for your message (${n}).` });
  }
  const rows = await waitFor(async () => {
    const r = await w.rows<Row & { offer: boolean }>("SELECT * FROM messages WHERE direction = 'inbound' AND from_address = $1", [COLLEAGUE]);
    return r.length === answers ? r : undefined;
  }, { timeoutMs: 40_000, what: () => `${answers} answers archived\n${w.system.dump()}` });
  await waitFor(async () => (await w.rows<{ n: string }>("SELECT count(*) AS n FROM sessions s JOIN messages m ON m.id = s.message_id WHERE m.from_address = $1", [COLLEAGUE]))[0]!.n === String(MAX), {
    timeoutMs: 20_000,
    what: () => `${MAX} sessions for the responder\n${w.system.dump()}`,
  });
  const held = rows.filter((r) => !r.offer);
  assert.equal(held.length, answers - MAX);
  assert.ok(held.every((r) => r.classification === "loop" && /^loop breaker: \d+ messages from bob@customer\.test within 10 minutes/.test(r.classification_reason ?? "")), JSON.stringify(held.map((r) => r.classification_reason)));
  await waitFor(() => alerts.some((a) => a.sender === COLLEAGUE), { timeoutMs: 10_000, what: "the loop alert" });
  assert.equal(alerts.filter((a) => a.sender === COLLEAGUE).length, 1, "one alert, not one per message");
  // Held back for good: none of the later ones ever becomes a session.
  for (const r of held) assert.equal((await sessionsOf(r.id)).length, 0);
});
